// A1111's prompt editing keys in the prompt boxes:
// Ctrl+Up / Ctrl+Down change the weight of the selection, of the (text:1.2) or <lora:name:0.8>
// around the cursor, or of the word under it; Alt+Left / Alt+Right move the comma-separated tag
// under the cursor (option keyedit_move). The new value is announced with an input event, so
// Gradio (and the token counter) see it.
(function () {
  const BOXES = "*:is([id*='_toprow'] [id*='_prompt'], .prompt) textarea";
  const WHITESPACE = {'Tab': '\t', 'Carriage Return': '\r', 'Line Feed': '\n'};
  const opts = () => window.sdPageOptions || {};
  const number = (v, fallback) => (Number.isFinite(Number(v)) && Number(v) > 0 ? Number(v) : fallback);

  // [start, end] of the text inside the innermost OPEN...CLOSE around the cursor, up to the last
  // ":" when it ends in a number; null when the cursor is not inside such a pair
  function enclosing(text, pos, open, close) {
    const before = text.slice(0, pos);
    const from = before.lastIndexOf(open);
    if (from < 0 || before.lastIndexOf(close) > from) return null;
    const after = text.slice(pos);
    const to = after.indexOf(close);
    if (to < 0) return null;
    const nextOpen = after.indexOf(open);
    if (nextOpen >= 0 && nextOpen < to) return null;
    const inner = text.slice(from + 1, pos + to);
    const end = /.*:-?[\d.]+/s.test(inner) ? inner.lastIndexOf(':') : inner.length;
    return [from + 1, from + 1 + end];
  }

  // [start, end] of the word under the cursor, bounded by the keyedit delimiters, without the
  // spaces around it
  function wordAt(text, pos) {
    let delimiters = String(opts().keyedit_delimiters ?? '');
    for (const name of opts().keyedit_delimiters_whitespace || []) delimiters += WHITESPACE[name] || '';
    const isDelimiter = (ch) => ch !== undefined && delimiters.includes(ch);
    let start = pos, end = pos;
    while (start > 0 && !isDelimiter(text[start - 1])) start--;
    while (end < text.length && !isDelimiter(text[end])) end++;
    while (start < end && text[start] === ' ') start++;
    while (end > start && text[end - 1] === ' ') end--;
    return [start, end];
  }

  function setText(box, text, start, end) {
    box.focus();
    box.value = text;
    box.setSelectionRange(start, end);
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }

  function editWeight(box, up) {
    let text = box.value;
    let start = box.selectionStart, end = box.selectionEnd;
    if (start === end) {
      [start, end] = enclosing(text, start, '<', '>') || enclosing(text, start, '(', ')')
        || enclosing(text, start, '[', ']') || wordAt(text, start);
      box.setSelectionRange(start, end);
    }
    const attention = number(opts().keyedit_precision_attention, 0.1);
    const left = start > 0 ? text[start - 1] : '', right = text[end];
    let close = ')', step = attention;
    if (left === '<') {  // an extra network: its multiplier
      close = '>';
      step = number(opts().keyedit_precision_extra, 0.05);
    } else if ((left === '(' && right === ')') || (left === '[' && right === ']')) {
      // old-style ((emphasis)) or [de-emphasis]: written as an explicit weight first
      let depth = 0;
      while (text[start - depth - 1] === left && text[end + depth] === right) depth++;
      const weight = Math.round((left === '[' ? (1 / 1.1) ** depth : 1.1 ** depth) / attention) * attention;
      text = text.slice(0, start - depth) + '(' + text.slice(start, end) + ':' + weight + ')' + text.slice(end + depth);
      start -= depth - 1;
      end -= depth - 1;
    } else if (left !== '(') {  // plain text: wrapped as (text:1.0) before the step
      while (end > start && text[end - 1] === ' ') end--;
      if (start === end) return;
      text = text.slice(0, start) + '(' + text.slice(start, end) + ':1.0)' + text.slice(end);
      start++;
      end++;
    }
    if (text[end] !== ':') return;
    const length = text.slice(end + 1).indexOf(close) + 1;
    let weight = parseFloat(text.slice(end + 1, end + length));
    if (Number.isNaN(weight)) return;
    weight = parseFloat((weight + (up ? step : -step)).toPrecision(12));
    if (close === ')' && weight === 1) {  // back to 1: the parentheses go
      const closing = text.indexOf(')', end);
      text = text.slice(0, start - 1) + text.slice(start, end) + text.slice(closing + 1);
      start--;
      end--;
    } else {
      const shown = Number.isInteger(weight) ? weight.toFixed(1) : String(weight);
      text = text.slice(0, end + 1) + shown + text.slice(end + length);
    }
    setText(box, text, start, end);
  }

  function moveTag(box, toLeft) {
    const text = box.value;
    const items = text.split(',');
    const commasBefore = (pos) => (text.slice(0, pos).match(/,/g) || []).length;
    const first = commasBefore(box.selectionStart), last = commasBefore(box.selectionEnd);
    const count = last - first + 1;
    let start, end;
    if (toLeft && first > 0) {
      items.splice(first - 1, 0, ...items.splice(first, count));
      start = items.slice(0, first - 1).join(',').length + (first === 1 ? 0 : 1);
      end = items.slice(0, last).join(',').length;
    } else if (!toLeft && last < items.length - 1) {
      items.splice(first + 1, 0, ...items.splice(first, count));
      start = items.slice(0, first + 1).join(',').length + 1;
      end = items.slice(0, last + 2).join(',').length;
    } else {
      return;
    }
    setText(box, items.join(','), start, end);
  }

  document.addEventListener('keydown', (e) => {
    const box = e.target;
    if (!box || !box.matches || !box.matches(BOXES)) return;
    if ((e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      e.preventDefault();
      editWeight(box, e.key === 'ArrowUp');
    } else if (e.altKey && (e.key === 'ArrowLeft' || e.key === 'ArrowRight') && opts().keyedit_move !== false) {
      e.preventDefault();  // Alt+Left would also go back in the browser's history
      moveTag(box, e.key === 'ArrowLeft');
    }
  });
})();
