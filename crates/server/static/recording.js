// The playback page: one player per participant, side by side, driven by one play/pause button and
// one position slider so that everyone is heard and seen in step. Each copy starts at its own offset
// on the recording's timeline; the first player that is playing sets the time, the others follow it.
(function () {
  'use strict';
  var box = document.getElementById('recording-players');
  var controls = document.getElementById('recording-controls');
  if (!box || !controls) {
    return;
  }
  var button = document.getElementById('recording-play');
  var seek = document.getElementById('recording-seek');
  var time = document.getElementById('recording-time');
  var span = Number(box.dataset.spanMs) / 1000;
  var players = Array.prototype.map.call(box.querySelectorAll('video'), function (video) {
    video.controls = false;
    // A figure's default margins would crowd the players side by side.
    video.parentNode.style.margin = '0';
    return { video: video, offset: Number(video.dataset.offsetMs) / 1000 };
  });
  // Further apart than this, a follower is moved to the leader's time.
  var DRIFT = 0.25;
  var playing = false;
  // The timeline position, and when (performance.now) it was taken: the clock between copies.
  var at = 0;
  var since = performance.now();

  function clock(seconds) {
    var whole = Math.max(0, Math.floor(seconds));
    var s = whole % 60;
    return Math.floor(whole / 60) + ':' + (s < 10 ? '0' : '') + s;
  }

  function length(p) {
    return isFinite(p.video.duration) ? p.video.duration : span - p.offset;
  }

  // Where the timeline is: the first player that is playing inside its own span says; between
  // copies, the wall clock runs on from the last position.
  function now() {
    if (playing) {
      for (var i = 0; i < players.length; i++) {
        var p = players[i];
        if (!p.video.paused && !p.video.seeking && p.video.currentTime > 0) {
          return p.offset + p.video.currentTime;
        }
      }
      return at + (performance.now() - since) / 1000;
    }
    return at;
  }

  // Puts every player where the timeline `t` has it, playing or not.
  function align(t, force) {
    players.forEach(function (p) {
      var local = t - p.offset;
      var v = p.video;
      if (local < 0 || local >= length(p)) {
        if (!v.paused) {
          v.pause();
        }
        v.currentTime = local < 0 ? 0 : length(p);
        return;
      }
      if (force || Math.abs(v.currentTime - local) > DRIFT) {
        v.currentTime = local;
      }
      if (playing && v.paused) {
        v.play().catch(function () {});
      } else if (!playing && !v.paused) {
        v.pause();
      }
    });
  }

  function show(t) {
    seek.value = String(Math.round(t * 1000));
    time.textContent = clock(t) + ' / ' + clock(span);
  }

  function tick() {
    var t = now();
    if (playing && t >= span) {
      playing = false;
      t = span;
      button.textContent = 'Play';
    }
    at = t;
    since = performance.now();
    align(t, false);
    show(t);
  }

  button.addEventListener('click', function () {
    at = now();
    playing = !playing;
    if (playing && at >= span) {
      at = 0;
    }
    since = performance.now();
    button.textContent = playing ? 'Pause' : 'Play';
    align(at, !playing);
    show(at);
  });

  seek.addEventListener('input', function () {
    at = Number(seek.value) / 1000;
    since = performance.now();
    align(at, true);
    show(at);
  });

  controls.hidden = false;
  show(0);
  setInterval(tick, 200);
})();
