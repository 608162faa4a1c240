// The page's own generations and what follows them, as in A1111: the progress in the window title
// (option show_progress_in_title), "Interrupting..." on the Interrupt button after its first click,
// and notification.mp3 when a generation has made pictures (options notification_audio and
// notification_volume). A click on Generate starts a generation (Gradio ignores further clicks
// until it has ended); the end of the Generate event calls finished() (webui/ui/page_habits.py).
(function () {
  const opts = () => window.sdPageOptions || {};
  const running = {};  // tab -> whether this page's generation there is under way
  const listeners = {started: [], finished: []};
  const emit = (what, ...args) => listeners[what].forEach((cb) => {
    try { cb(...args); } catch (err) { console.error('page job listener', err); }
  });
  const busy = () => Object.values(running).some(Boolean);

  const jobs = window.sdPageJobs = {
    running: (tab) => Boolean(running[tab]),
    on: (what, cb) => listeners[what].push(cb),
    started(tab) {
      if (running[tab]) return;
      running[tab] = true;
      emit('started', tab);
    },
    finished(tab, madePictures) {
      running[tab] = false;
      emit('finished', tab, Boolean(madePictures));
    },
  };
  // seen in the capture phase, before Gradio's own handler (a js-only Gradio listener on the same
  // click only runs once the generation has ended)
  document.addEventListener('click', (e) => {
    const button = e.target && e.target.closest && e.target.closest('#txt2img_generate, #img2img_generate');
    if (button && !button.disabled) jobs.started(button.id.replace(/_generate$/, ''));
  }, true);

  // ---- progress in the title: polled only while one of this page's generations runs
  const PREFIX = /^\[[^\]]*\] /;
  let polling = false;
  const plainTitle = () => document.title.replace(PREFIX, '');
  const setTitle = (progress) => {
    const title = (opts().show_progress_in_title !== false && progress ? '[' + progress.trim() + '] ' : '') + plainTitle();
    if (document.title !== title) document.title = title;
  };
  const pad2 = (x) => (x < 10 ? '0' + x : String(x));
  const formatTime = (secs) => {
    if (secs > 3600) return pad2(Math.floor(secs / 3600)) + ':' + pad2(Math.floor(secs / 60) % 60) + ':' + pad2(Math.floor(secs) % 60);
    if (secs > 60) return pad2(Math.floor(secs / 60)) + ':' + pad2(Math.floor(secs) % 60);
    return Math.floor(secs) + 's';
  };
  const progressText = (res) => {
    let text = res.progress > 0 ? (res.progress * 100).toFixed(0) + '%' : '';
    if (res.eta) text += ' ETA: ' + formatTime(res.eta);
    return text;
  };
  async function poll() {
    if (polling || opts().show_progress_in_title === false) return;
    polling = true;
    try {
      while (busy()) {
        try {
          const res = await (await fetch('internal/job-progress', {cache: 'no-store'})).json();
          if (busy()) setTitle(res.active ? progressText(res) : '');
        } catch (err) { /* the server restarts or went away: try again on the next tick */ }
        await new Promise((done) => setTimeout(done, 500));
      }
    } finally {
      polling = false;
      setTitle('');
    }
  }
  jobs.on('started', () => { poll(); });

  // ---- Interrupt: "Interrupting..." until the generation has ended
  const labelNode = (button) => {
    const walk = document.createTreeWalker(button, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) if (n.nodeValue.trim()) return n;
    return null;
  };
  const interrupting = {};  // tab -> [text node, its text before]
  document.addEventListener('click', (e) => {
    const button = e.target && e.target.closest && e.target.closest('#txt2img_interrupt, #img2img_interrupt');
    if (!button) return;
    const tab = button.id.replace(/_interrupt$/, '');
    if (!jobs.running(tab) || interrupting[tab]) return;
    const node = labelNode(button);
    if (!node) return;
    interrupting[tab] = [node, node.nodeValue];
    node.nodeValue = 'Interrupting...';
    button.classList.add('interrupting');
  }, true);
  jobs.on('finished', (tab) => {
    const saved = interrupting[tab];
    if (!saved || jobs.running(tab)) return;
    delete interrupting[tab];
    saved[0].nodeValue = saved[1];
    const button = document.getElementById(tab + '_interrupt');
    if (button) button.classList.remove('interrupting');
  });

  // ---- notification.mp3 (window.sdPageSound is only set when the file exists and the option is
  // on); in a hidden #audio_notification as in A1111, made at the first sound
  const player = () => {
    let holder = document.getElementById('audio_notification');
    if (!holder) {
      holder = document.createElement('div');
      holder.id = 'audio_notification';
      holder.style.display = 'none';
      const audio = document.createElement('audio');
      audio.src = window.sdPageSound;
      holder.append(audio);
      document.body.append(holder);
    }
    return holder.querySelector('audio');
  };
  jobs.on('finished', (tab, madePictures) => {
    if (!madePictures || !window.sdPageSound || opts().notification_audio === false) return;
    const audio = player();
    audio.volume = Math.min(1, Math.max(0, Number(opts().notification_volume ?? 100) / 100));
    audio.currentTime = 0;
    audio.play().catch((err) => console.warn('notification sound not played:', err.message));
  });
})();
