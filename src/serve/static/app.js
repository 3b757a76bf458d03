// runner serve: follows a live run through server-sent events. The page is whole without this script; the script
// only recolours nodes, fills in statuses and appends log lines (as text nodes: never as HTML).
(function () {
  'use strict';
  var run = document.getElementById('run');
  if (!run || !run.dataset.events) {
    return;
  }
  function hex(text) {
    return Array.from(new TextEncoder().encode(text))
      .map(function (b) { return b.toString(16).padStart(2, '0'); })
      .join('');
  }
  function setStatus(node, status) {
    var id = hex(node);
    var cell = document.getElementById('status_' + id);
    if (cell) {
      cell.textContent = status;
      cell.className = 'status s-' + status;
    }
    var box = document.getElementById('dag_' + id);
    if (box) {
      box.setAttribute('class', (box.tagName.toLowerCase() === 'g' ? 'node' : 'dag-node') + ' s-' + status);
    }
  }
  function setAttempt(node, attempt) {
    var cell = document.getElementById('attempt_' + hex(node));
    if (cell) {
      cell.textContent = String(attempt);
    }
  }
  function setRunStatus(status) {
    var badge = document.getElementById('run-status');
    if (badge) {
      badge.textContent = status;
      badge.className = 'badge s-' + status;
    }
  }
  function appendLog(node, line) {
    var pre = document.getElementById('log_' + hex(node));
    if (!pre) {
      reloadSoon();
      return;
    }
    pre.appendChild(document.createTextNode(line + '\n'));
    while (pre.childNodes.length > 500) {
      pre.removeChild(pre.firstChild);
    }
  }
  function notice(text) {
    var list = document.getElementById('notices');
    if (list) {
      var item = document.createElement('li');
      item.textContent = text;
      list.appendChild(item);
    }
  }
  var timelineBusy = false;
  function refreshTimeline() {
    var box = document.getElementById('timeline');
    if (!box || timelineBusy) {
      return;
    }
    timelineBusy = true;
    fetch(run.dataset.timeline, { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (svg) { if (svg !== null) { box.innerHTML = svg; } })
      .finally(function () { timelineBusy = false; });
  }
  var reloading = false;
  function reloadSoon() {
    if (!reloading) {
      reloading = true;
      setTimeout(function () { location.reload(); }, 300);
    }
  }
  function rows() {
    return document.querySelectorAll('table.steps tbody tr').length;
  }
  var source = new EventSource(run.dataset.events);
  source.onmessage = function (message) {
    var ev;
    try {
      ev = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    switch (ev.event) {
      case 'sync':
        if (ev.nodes && Object.keys(ev.nodes).length !== rows()) {
          reloadSoon();
          return;
        }
        Object.keys(ev.nodes || {}).forEach(function (node) {
          setStatus(node, ev.nodes[node].status);
          if (ev.nodes[node].attempt) {
            setAttempt(node, ev.nodes[node].attempt);
          }
          if (ev.nodes[node].status === 'waiting' && !document.getElementById('approval_' + hex(node))) {
            reloadSoon();
          }
        });
        setRunStatus(ev.status);
        if (['succeeded', 'failed', 'interrupted'].indexOf(ev.status) >= 0) {
          source.close();
          reloadSoon();
        }
        break;
      case 'run_recorded':
      case 'run_started':
      case 'nodes_added':
        if (ev.event !== 'run_started' || (ev.nodes && ev.nodes.length !== rows())) {
          reloadSoon();
        }
        setRunStatus('running');
        break;
      case 'node_started':
        setStatus(ev.node, 'running');
        setAttempt(ev.node, ev.attempt);
        refreshTimeline();
        break;
      case 'log':
        appendLog(ev.node, ev.line);
        break;
      case 'approval_requested':
        setStatus(ev.node, 'waiting');
        if (!document.getElementById('approval_' + hex(ev.node))) {
          reloadSoon();
        }
        break;
      case 'node_finished':
        setStatus(ev.node, ev.status.replace('_', '-'));
        var approval = document.getElementById('approval_' + hex(ev.node));
        if (approval) {
          approval.remove();
        }
        refreshTimeline();
        break;
      case 'notice':
        notice(ev.text);
        break;
      case 'run_finished':
        setRunStatus(ev.status);
        source.close();
        reloadSoon();
        break;
      case 'run_not_started':
      case 'resync':
        source.close();
        reloadSoon();
        break;
    }
  };
})();
