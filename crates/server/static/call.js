// The call page's WebRTC: camera and microphone, one RTCPeerConnection to the server's SFU, and the
// controls. The SFU is on the server's own address, so no ICE servers are used; the offer is sent once
// its candidates are gathered, as the SFU takes no trickled ones. Switching between audio only and video
// is a new offer on the same connection; a connection that fails joins again, as a reconnect.
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
  var mode = root.getAttribute("data-mode") === "audio_only" ? "audio_only" : "video";
  var status = document.getElementById("call-status");
  var remoteVideo = document.getElementById("remote-video");
  var localVideo = document.getElementById("local-video");
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
  var video = null; // the video transceiver while the call has video
  var busy = false;
  var ended = false;

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
      return response.json().then(function (json) {
        if (!response.ok) {
          throw new Error(json && json.error ? json.error.message : "The server refused (" + response.status + ").");
        }
        return json;
      });
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

  function addVideo(track) {
    local.addTrack(track);
    video = pc.addTransceiver(track, { direction: "sendrecv", streams: [local] });
  }

  // A new connection carrying the tracks we have, joined to the call.
  function connect() {
    if (pc) {
      pc.close();
    }
    pc = new RTCPeerConnection({ iceServers: [] });
    var remote = new MediaStream();
    remoteVideo.srcObject = remote;
    pc.addEventListener("track", function (event) {
      remote.addTrack(event.track);
    });
    pc.addEventListener("connectionstatechange", function () {
      var state = pc.connectionState;
      if (state === "connected") {
        say(mode === "video" ? "Connected." : "Connected, audio only.");
      } else if (state === "failed" && !ended) {
        say("The connection was lost. Reconnecting…");
        join();
      }
    });
    local.getAudioTracks().forEach(function (track) {
      pc.addTransceiver(track, { direction: "sendrecv", streams: [local] });
    });
    video = null;
    local.getVideoTracks().forEach(function (track) {
      local.removeTrack(track);
      addVideo(track);
    });
    return negotiate(base);
  }

  function join() {
    return connect().then(function () {
      setEnabled(true);
    }, failed);
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
    who.textContent = message.sender_id === me ? "You" : otherName;
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
      if (video) {
        video.stop();
        video = null;
      }
      localVideo.srcObject = null;
      switching = negotiate(base + "/mode");
    } else {
      mode = "video";
      switching = navigator.mediaDevices.getUserMedia({ video: true }).then(function (stream) {
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
    local.getTracks().forEach(function (track) { track.stop(); });
    remoteVideo.srcObject = null;
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

  navigator.mediaDevices.getUserMedia({ audio: true, video: mode === "video" }).then(function (stream) {
    stream.getTracks().forEach(function (track) { local.addTrack(track); });
    localVideo.srcObject = local;
    say("Choose whether you may be recorded to join the call.");
    buttons.joinRecorded.disabled = false;
    buttons.joinUnrecorded.disabled = false;
  }, function (error) {
    say("Your camera or microphone could not be used: " + error.message);
  });
})();
