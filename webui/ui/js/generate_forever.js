// A1111's right-click menu on Generate: "Generate forever" clicks Generate again whenever the tab's
// generation has ended, until "Cancel generate forever" (on Generate or Interrupt). Interrupt only
// ends the running generation, as in A1111. One loop for the page: choosing it again, or on the
// other tab, moves it instead of starting a second one.
(function () {
  const jobs = window.sdPageJobs;
  if (!jobs) return;
  const TARGETS = '#txt2img_generate, #img2img_generate, #txt2img_interrupt, #img2img_interrupt';
  const AGAIN_MS = 500;  // A1111 looks every 500 ms whether the tab is idle
  let forever = null;  // the tab that generates forever
  let timer = null;

  const generate = (tab) => {
    const button = document.getElementById(tab + '_generate');
    if (button) button.click();
  };
  const start = (tab) => {
    forever = tab;
    clearTimeout(timer);
    if (!jobs.running(tab)) generate(tab);
  };
  const cancel = () => {
    forever = null;
    clearTimeout(timer);
  };
  jobs.on('finished', (tab) => {
    if (forever !== tab) return;
    clearTimeout(timer);
    timer = setTimeout(() => { if (forever === tab && !jobs.running(tab)) generate(tab); }, AGAIN_MS);
  });

  const closeMenu = () => document.querySelectorAll('#context-menu').forEach((m) => m.remove());
  function openMenu(e, entries) {
    closeMenu();
    const menu = document.createElement('nav');
    menu.id = 'context-menu';
    menu.className = 'context-menu';
    const list = document.createElement('ul');
    list.className = 'context-menu-items';
    for (const [label, action] of entries) {
      const item = document.createElement('a');
      item.textContent = label;
      item.addEventListener('click', () => { closeMenu(); action(); });
      list.append(item);
    }
    menu.append(list);
    document.body.append(menu);
    // inside the window even next to its right or bottom edge
    const x = Math.min(e.clientX, window.innerWidth - menu.offsetWidth - 4);
    const y = Math.min(e.clientY, window.innerHeight - menu.offsetHeight - 4);
    menu.style.left = Math.max(0, x) + 'px';
    menu.style.top = Math.max(0, y) + 'px';
  }

  document.addEventListener('contextmenu', (e) => {
    const button = e.target && e.target.closest && e.target.closest(TARGETS);
    closeMenu();
    if (!button) return;
    e.preventDefault();
    const tab = button.id.split('_')[0];
    const entries = button.id.endsWith('_generate') ? [['Generate forever', () => start(tab)]] : [];
    entries.push(['Cancel generate forever', cancel]);
    openMenu(e, entries);
  });
  document.addEventListener('click', (e) => {
    if (e.isTrusted && !(e.target.closest && e.target.closest('#context-menu'))) closeMenu();
  });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeMenu(); });
})();
