// The call page's WebRTC: camera and microphone, one RTCPeerConnection to the server's SFU, and the
// controls. The SFU is on the server's own address, so no ICE servers are used; the offer is sent once
// its candidates are gathered, as the SFU takes no trickled ones. Switching between audio only and video
// is a new offer on the same connection; a connection that fails joins again, as a reconnect.
// The pages' Content-Security-Policy allows no inline script, so this is a file of its own.
(function () {
  "use strict";

  var root = document.getElementById("call");
  if (!root || !window.RTCPeerConnection || !navigator.mediaDevices) {
    return;
  }
  var base = "/api/v1/appointments/" + encodeURIComponent(root.getAttribute("data-appointment")) + "/call";
  var mode = root.getAttribute("data-mode") === "audio_only" ? "audio_only" : "video";
  var status = document.getElementById("call-status");
  var remoteVideo = document.getElementById("remote-video");
  var localVideo = document.getElementById("local-video");
  var buttons = {
    mute: document.getElementById("call-mute"),
    camera: document.getElementById("call-camera"),
    mode: document.getElementById("call-mode"),
    hangUp: document.getElementById("call-hang-up")
  };
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
      .then(function () { return post(path, { sdp: connection.localDescription.sdp, mode: mode }); })
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
  }

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

  navigator.mediaDevices.getUserMedia({ audio: true, video: mode === "video" }).then(function (stream) {
    stream.getTracks().forEach(function (track) { local.addTrack(track); });
    localVideo.srcObject = local;
    say("Connecting…");
    return join();
  }, function (error) {
    say("Your camera or microphone could not be used: " + error.message);
  });
})();
