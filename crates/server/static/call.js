// The call page's WebRTC: camera and microphone, one RTCPeerConnection to the server's SFU, and the
// controls. The SFU is on the server's own address, so no ICE servers are used; the offer is sent once
// its candidates are gathered, as the SFU takes no trickled ones. Switching between audio only and video
// is a new offer on the same connection; a connection that fails, or stays disconnected for a few seconds,
// joins again on a new one, as a reconnect, and keeps trying while the network is down.
// A call may have a third person in it, a guest such as an interpreter. The SFU never offers lines
// itself, so per kind the page offers one line for each other person it may receive: its own
// send-and-receive line (slot 0), then receive-only ones. The SFU puts each other person in a slot of
// their own and keeps them there: a patient and a clinician see each other in slot 0 and the guest in
// slot 1, a guest the patient in slot 0 and the clinician in slot 1. Each slot has a tile, shown while
// media arrives in it, next to the page's own video. The page names slot 0 by `data-with` and may name
// slot 1 by `data-second` (else "Invited guest") and say by `data-second-role` what that person is in
// the consultation (else "guest"), so that chat messages carry the right name.
// The viewer may choose the camera and microphone, before joining and during the call: a new device's
// track replaces the old one on the same line, so the SFU sees no change. Once a second the page reads
// the connection's statistics, shows how good the connection is (round trip and packets lost since the
// last look) and whether each slot still receives media.
// Before joining, the viewer answers whether they may be recorded; the answer goes with the join, and
// they can change it during the call. The chat is kept in the consultation's record: sent by POST, and
// received (everyone's, including one's own) from the server's event stream.
// The pages' Content-Security-Policy allows no inline script, so this is a file of its own.
(function () {
  "use strict";

  var root = document.getElementById("call");
  if (!root || !window.RTCPeerConnection || !navigator.mediaDevices) {
    return;
  }
  var appointment = "/api/v1/appointments/" + encodeURIComponent(root.getAttribute("data-appointment"));
  var base = appointment + "/call";
  var me = root.getAttribute("data-me");
  var otherName = root.getAttribute("data-with");
  var secondName = root.getAttribute("data-second") || "Invited guest";
  var secondRole = root.getAttribute("data-second-role") || "guest";
  var mode = root.getAttribute("data-mode") === "audio_only" ? "audio_only" : "video";
  var status = document.getElementById("call-status");
  var localVideo = document.getElementById("local-video");
  var people = document.getElementById("call-people");
  var quality = document.getElementById("call-quality");
  var choices = {
    audio: document.getElementById("call-microphone"),
    video: document.getElementById("call-camera-choice")
  };
  var buttons = {
    mute: document.getElementById("call-mute"),
    camera: document.getElementById("call-camera"),
    mode: document.getElementById("call-mode"),
    hangUp: document.getElementById("call-hang-up"),
    consent: document.getElementById("call-consent"),
    joinRecorded: document.getElementById("call-join-recorded"),
    joinUnrecorded: document.getElementById("call-join-unrecorded")
  };
  var ask = document.getElementById("call-consent-ask");
  var recordingStatus = document.getElementById("call-recording");
  var chat = {
    list: document.getElementById("chat-messages"),
    form: document.getElementById("chat-form"),
    body: document.getElementById("chat-body"),
    error: document.getElementById("chat-error")
  };
  var consent = null; // "given" or "withdrawn" once answered
  var lastMessage = 0;
  var pc = null;
  var local = new MediaStream();
  var busy = false;
  var ended = false;
  // How long a slot may go without media before its tile is taken away.
  var GONE_AFTER_MS = 5000;
  // Chromium calls a connection that has had no answers for a few seconds disconnected, and failed only
  // some 15 s later; a blip shorter than this comes back by itself, anything longer is a lost network.
  var RECONNECT_AFTER_MS = 3000;
  // Between attempts to join again while the server cannot be reached.
  var RETRY_AFTER_MS = 2000;
  var reconnecting = null;
  // One per other person the call may have (the SFU's MAX_PARTICIPANTS - 1). `audio` and `video` are this
  // connection's transceivers for the slot; the tile and when media was last seen outlive reconnects.
  var remotes = [otherName, secondName].map(function (name) {
    return { name: name, audio: null, video: null, tile: null, bytes: 0, seen: 0 };
  });
  var watching = null;
  // Totals from the last statistics read, for the loss since then.
  var lastPackets = { received: 0, lost: 0 };

  // What getUserMedia should ask for a kind: the chosen device, if one was chosen.
  function wanted(kind) {
    var id = choices[kind] && choices[kind].value;
    return id ? { deviceId: { exact: id } } : true;
  }

  function say(text) {
    status.textContent = text;
  }

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (response) {
      if (response.status === 204) {
        return null;
      }
      // A proxy in front of an unavailable server may answer with a page that is not JSON.
      var parsed = response.ok ? response.json() : response.json().catch(function () { return null; });
      return parsed.then(function (json) {
        if (!response.ok) {
          var message = json && json.error ? json.error.message : "The server refused (" + response.status + ").";
          var refused = new Error(message);
          refused.status = response.status;
          throw refused;
        }
        return json;
      });
    }, function () {
      // Status 0, as browsers report a request that got no answer.
      var lost = new Error("The server could not be reached.");
      lost.status = 0;
      throw lost;
    });
  }

  function iceGathered(connection) {
    if (connection.iceGatheringState === "complete") {
      return Promise.resolve();
    }
    return new Promise(function (resolve) {
      connection.addEventListener("icegatheringstatechange", function done() {
        if (connection.iceGatheringState === "complete") {
          connection.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      });
    });
  }

  // Offers what the connection has now and applies the SFU's answer.
  function negotiate(path) {
    var connection = pc;
    return connection.createOffer()
      .then(function (offer) { return connection.setLocalDescription(offer); })
      .then(function () { return iceGathered(connection); })
      .then(function () {
        return post(path, { sdp: connection.localDescription.sdp, mode: mode, consent: consent });
      })
      .then(function (answer) { return connection.setRemoteDescription({ type: "answer", sdp: answer.sdp }); });
  }

  // The tile for a slot: its video (which also plays the slot's sound) and who it is.
  function tile(remote) {
    if (!remote.tile) {
      var figure = document.createElement("figure");
      figure.className = "remote-tile";
      figure.hidden = true;
      var element = document.createElement("video");
      element.className = "remote-video";
      element.autoplay = true;
      element.playsInline = true;
      element.setAttribute("aria-label", remote.name);
      var caption = document.createElement("figcaption");
      caption.textContent = remote.name;
      figure.appendChild(element);
      figure.appendChild(caption);
      localVideo.parentNode.insertBefore(figure, localVideo);
      remote.tile = figure;
    }
    return remote.tile;
  }

  function showPeople() {
    var here = remotes.filter(function (remote) { return remote.tile && !remote.tile.hidden; })
      .map(function (remote) { return remote.name; });
    var text = here.length ? "In the call with you: " + here.join(" and ") + "." : "Nobody else is in the call yet.";
    if (people && people.textContent !== text) {
      people.textContent = text;
    }
  }

  function show(remote, on) {
    var figure = tile(remote);
    if (figure.hidden === on) {
      figure.hidden = !on;
      showPeople();
    }
  }

  // Plays what the slot's lines on this connection receive.
  function attach(remote) {
    var tracks = [remote.audio, remote.video].filter(Boolean).map(function (t) { return t.receiver.track; });
    tile(remote).querySelector("video").srcObject = new MediaStream(tracks);
  }

  // A slot's line of one kind: `sending` is our own track on the send-and-receive line of slot 0.
  function receive(remote, kind, sending) {
    var transceiver = sending
      ? pc.addTransceiver(sending, { direction: "sendrecv", streams: [local] })
      : pc.addTransceiver(kind, { direction: "recvonly" });
    transceiver.receiver.track.addEventListener("unmute", function () {
      remote.seen = Date.now();
      show(remote, true);
    });
    remote[kind] = transceiver;
    return transceiver;
  }

  // Video lines for every slot, in slot order after any there were, so the SFU counts them right.
  function addVideo(track) {
    local.addTrack(track);
    remotes.forEach(function (remote, i) {
      receive(remote, "video", i === 0 ? track : null);
      attach(remote);
    });
  }

  // Good, fair or poor, from the round trip (seconds) and the share of packets lost.
  function showQuality(rtt, lost) {
    if (!quality) {
      return;
    }
    var level = rtt < 0.15 && lost < 0.02 ? "good" : rtt < 0.3 && lost < 0.08 ? "fair" : "poor";
    quality.setAttribute("data-quality", level);
    quality.textContent = "Connection: " + level + " (round trip " + Math.round(rtt * 1000) + " ms, " +
      (lost * 100).toFixed(1) + "% of packets lost)";
  }

  // Media arriving in a slot keeps its tile up; a slot that has gone quiet (its person left) loses it.
  function watch() {
    var connection = pc;
    if (!connection) {
      return;
    }
    connection.getStats().then(function (stats) {
      if (connection !== pc) {
        return;
      }
      var bytes = remotes.map(function () { return 0; });
      var rtt = null;
      var packets = { received: 0, lost: 0 };
      stats.forEach(function (report) {
        if (report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime !== undefined) {
          rtt = report.currentRoundTripTime;
        }
        if (report.type !== "inbound-rtp") {
          return;
        }
        packets.received += report.packetsReceived || 0;
        packets.lost += Math.max(0, report.packetsLost || 0);
        remotes.forEach(function (remote, i) {
          [remote.audio, remote.video].forEach(function (t) {
            if (t && (report.trackIdentifier === t.receiver.track.id || (t.mid && report.mid === t.mid))) {
              bytes[i] += report.bytesReceived || 0;
            }
          });
        });
      });
      var received = packets.received - lastPackets.received;
      var lostSince = packets.lost - lastPackets.lost;
      lastPackets = packets;
      if (rtt !== null && received + lostSince > 0) {
        showQuality(rtt, lostSince / (received + lostSince));
      }
      var now = Date.now();
      remotes.forEach(function (remote, i) {
        if (bytes[i] > remote.bytes) {
          remote.seen = now;
        }
        remote.bytes = bytes[i];
        show(remote, now - remote.seen < GONE_AFTER_MS);
      });
    });
  }

  // A new connection carrying the tracks we have, joined to the call.
  function connect() {
    if (pc) {
      pc.close();
    }
    window.clearTimeout(reconnecting);
    lastPackets = { received: 0, lost: 0 };
    var connection = new RTCPeerConnection({ iceServers: [] });
    pc = connection;
    connection.addEventListener("connectionstatechange", function () {
      if (connection !== pc) {
        return;
      }
      var state = connection.connectionState;
      window.clearTimeout(reconnecting);
      if (state === "connected") {
        say(mode === "video" ? "Connected." : "Connected, audio only.");
      } else if (state === "failed") {
        rejoin();
      } else if (state === "disconnected") {
        reconnecting = window.setTimeout(rejoin, RECONNECT_AFTER_MS);
      }
    });
    var microphone = local.getAudioTracks()[0];
    remotes.forEach(function (remote, i) {
      remote.audio = null;
      remote.video = null;
      remote.bytes = 0;
      receive(remote, "audio", i === 0 && microphone ? microphone : null);
      attach(remote);
    });
    local.getVideoTracks().forEach(function (track) {
      local.removeTrack(track);
      addVideo(track);
    });
    if (!watching) {
      watching = window.setInterval(watch, 1000);
    }
    return negotiate(base);
  }

  function join() {
    return connect().then(function () {
      setEnabled(true);
    }, failed);
  }

  // Joins again on a new connection after this one was lost. While the server cannot be reached (no
  // answer, or one saying it is unavailable) it tries again; anything else, such as the call having
  // ended, is the end of it.
  function rejoin() {
    if (ended) {
      return;
    }
    say("The connection was lost. Reconnecting…");
    connect().then(function () {
      setEnabled(true);
    }, function (error) {
      if (ended) {
        return;
      }
      if (error.status === 0 || error.status >= 500) {
        say("The connection was lost. Trying again to reconnect…");
        reconnecting = window.setTimeout(rejoin, RETRY_AFTER_MS);
      } else {
        failed(error);
      }
    });
  }

  function failed(error) {
    say("The call could not go on: " + error.message);
    setEnabled(!ended);
  }

  function setEnabled(on) {
    buttons.mute.disabled = !on;
    buttons.hangUp.disabled = !on;
    buttons.mode.disabled = !on;
    buttons.camera.disabled = !on || mode !== "video";
    buttons.mode.textContent = mode === "video" ? "Switch to audio only" : "Switch to video";
    buttons.consent.disabled = !on;
    showConsent();
  }

  function showConsent() {
    buttons.consent.textContent = consent === "given" ? "Stop recording me" : "Allow recording me";
    recordingStatus.textContent = consent === "given"
      ? "You are being recorded."
      : "You are not being recorded.";
  }

  buttons.consent.addEventListener("click", function () {
    var wanted = consent === "given" ? "withdrawn" : "given";
    buttons.consent.disabled = true;
    post(base + "/consent", { decision: wanted }).then(function (answer) {
      consent = answer.decision;
    }, function (error) {
      recordingStatus.textContent = "Your choice could not be saved: " + error.message;
    }).then(function () {
      buttons.consent.disabled = ended;
      if (!ended) {
        showConsent();
      }
    });
  });

  function showMessage(message) {
    if (message.seq <= lastMessage) {
      return;
    }
    lastMessage = message.seq;
    var item = document.createElement("li");
    var who = document.createElement("strong");
    if (message.sender_id === me) {
      who.textContent = "You";
    } else {
      who.textContent = message.sender_role === secondRole ? secondName : otherName;
    }
    var time = document.createElement("time");
    time.dateTime = message.sent_at;
    time.textContent = new Date(message.sent_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    var text = document.createElement("p");
    text.textContent = message.body;
    item.appendChild(who);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(time);
    item.appendChild(text);
    chat.list.appendChild(item);
    item.scrollIntoView({ block: "nearest" });
  }

  function listen() {
    if (!window.EventSource) {
      return;
    }
    var source = new EventSource(appointment + "/messages/events?after=" + lastMessage);
    source.addEventListener("message", function (event) {
      showMessage(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      // A reconnect asks again from the last message shown, not from where this stream began.
      source.close();
      if (!ended) {
        window.setTimeout(listen, 3000);
      }
    });
  }

  chat.form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = chat.body.value;
    if (!body.trim()) {
      return;
    }
    chat.error.hidden = true;
    post(appointment + "/messages", { body: body }).then(function (message) {
      chat.body.value = "";
      showMessage(message);
    }, function (error) {
      chat.error.textContent = error.message;
      chat.error.hidden = false;
    });
  });

  function toggle(button, tracks, onText, offText) {
    var off = button.getAttribute("aria-pressed") !== "true";
    tracks.forEach(function (track) { track.enabled = !off; });
    button.setAttribute("aria-pressed", off ? "true" : "false");
    button.textContent = off ? offText : onText;
  }

  buttons.mute.addEventListener("click", function () {
    toggle(buttons.mute, local.getAudioTracks(), "Mute", "Unmute");
  });

  buttons.camera.addEventListener("click", function () {
    toggle(buttons.camera, local.getVideoTracks(), "Turn camera off", "Turn camera on");
  });

  buttons.mode.addEventListener("click", function () {
    if (busy) {
      return;
    }
    busy = true;
    setEnabled(false);
    var switching;
    if (mode === "video") {
      // Audio only: the camera goes off and the video line is closed on both sides.
      mode = "audio_only";
      local.getVideoTracks().forEach(function (track) {
        track.stop();
        local.removeTrack(track);
      });
      remotes.forEach(function (remote) {
        if (remote.video) {
          remote.video.stop();
          remote.video = null;
          attach(remote);
        }
      });
      localVideo.srcObject = null;
      switching = negotiate(base + "/mode");
    } else {
      mode = "video";
      switching = navigator.mediaDevices.getUserMedia({ video: wanted("video") }).then(function (stream) {
        addVideo(stream.getVideoTracks()[0]);
        localVideo.srcObject = local;
        buttons.camera.setAttribute("aria-pressed", "false");
        buttons.camera.textContent = "Turn camera off";
        return negotiate(base + "/mode");
      });
    }
    switching.then(function () {
      say(mode === "video" ? "Connected." : "Connected, audio only.");
      setEnabled(true);
    }, failed).then(function () {
      busy = false;
    });
  });

  function hangUp() {
    if (ended) {
      return;
    }
    ended = true;
    setEnabled(false);
    if (pc) {
      pc.close();
    }
    window.clearInterval(watching);
    local.getTracks().forEach(function (track) { track.stop(); });
    remotes.forEach(function (remote) {
      if (remote.tile) {
        remote.tile.querySelector("video").srcObject = null;
        remote.tile.hidden = true;
      }
    });
    if (people) {
      people.textContent = "";
    }
    localVideo.srcObject = null;
    say("You have left the call.");
    return fetch(base + "/leave", { method: "POST", credentials: "same-origin", keepalive: true });
  }

  buttons.hangUp.addEventListener("click", hangUp);
  window.addEventListener("pagehide", hangUp);

  // For the browser's console (and the browser tests): the connection's statistics.
  window.confideCallStats = function () {
    return pc ? pc.getStats() : Promise.resolve(new Map());
  };

  function answer(decision) {
    consent = decision;
    ask.hidden = true;
    say("Connecting…");
    join();
  }

  buttons.joinRecorded.addEventListener("click", function () { answer("given"); });
  buttons.joinUnrecorded.addEventListener("click", function () { answer("withdrawn"); });
  listen();

  // Lists the devices of each kind, the one in use selected. Names are only given once the page may use
  // a camera or microphone, so this runs after the first getUserMedia.
  function listDevices() {
    return navigator.mediaDevices.enumerateDevices().then(function (devices) {
      ["audio", "video"].forEach(function (kind) {
        var select = choices[kind];
        if (!select) {
          return;
        }
        var track = kind === "audio" ? local.getAudioTracks()[0] : local.getVideoTracks()[0];
        var current = track && track.getSettings ? track.getSettings().deviceId : select.value;
        select.textContent = "";
        devices.filter(function (d) { return d.kind === kind + "input"; }).forEach(function (d, i) {
          var option = document.createElement("option");
          option.value = d.deviceId;
          option.textContent = d.label || (kind === "audio" ? "Microphone " : "Camera ") + (i + 1);
          option.selected = d.deviceId === current;
          select.appendChild(option);
        });
        select.disabled = select.options.length < 2;
      });
    });
  }

  // Puts the chosen device's track in place of the old one, on the preview and on the line it is sent on.
  function useDevice(kind) {
    var old = kind === "audio" ? local.getAudioTracks()[0] : local.getVideoTracks()[0];
    if (!old) {
      return; // no camera while audio only: the choice is used when video comes back
    }
    var constraints = {};
    constraints[kind] = wanted(kind);
    navigator.mediaDevices.getUserMedia(constraints).then(function (stream) {
      var track = stream.getTracks()[0];
      track.enabled = old.enabled;
      var line = remotes[0][kind];
      var replaced = line && pc ? line.sender.replaceTrack(track) : Promise.resolve();
      return replaced.then(function () {
        local.removeTrack(old);
        local.addTrack(track);
        old.stop();
        localVideo.srcObject = local;
      });
    }).catch(function (error) {
      say("That device could not be used: " + error.message);
    });
  }

  ["audio", "video"].forEach(function (kind) {
    if (choices[kind]) {
      choices[kind].addEventListener("change", function () { useDevice(kind); });
    }
  });

  navigator.mediaDevices.getUserMedia({ audio: true, video: mode === "video" }).then(function (stream) {
    stream.getTracks().forEach(function (track) { local.addTrack(track); });
    localVideo.srcObject = local;
    listDevices();
    say("Choose whether you may be recorded to join the call.");
    buttons.joinRecorded.disabled = false;
    buttons.joinUnrecorded.disabled = false;
  }, function (error) {
    say("Your camera or microphone could not be used: " + error.message);
  });
})();
