// Renders what the server says; every rule lives in the server, which replays the schedule.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };

  function send(method, path) {
    return fetch(path, { method: method }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error(t); });
      return r.json();
    }).then(render).catch(function (e) {
      $('status').className = 'status violated';
      $('status').textContent = 'The server refused: ' + e.message;
    });
  }

  function list(el, items, empty) {
    el.textContent = '';
    (items.length ? items : [empty]).forEach(function (t) {
      var li = document.createElement('li');
      li.textContent = t;
      el.appendChild(li);
    });
  }

  function render(s) {
    var select = $('scenario');
    if (select.options.length !== s.scenarios.length) {
      select.textContent = '';
      s.scenarios.forEach(function (x) {
        var o = document.createElement('option');
        o.value = x.id;
        o.textContent = x.id + ' (expected: ' + x.expected + ')';
        select.appendChild(o);
      });
    }
    select.value = s.id;
    $('description').textContent = s.description;
    $('passage').textContent = s.passage ? s.passage + ' (seed ' + s.seed + ')' : '';
    $('invariant').textContent = s.invariant || '';

    var status = $('status');
    status.className = 'status ' + s.status;
    status.textContent = s.message;
    var analysis = $('analysis');
    analysis.hidden = !s.analysis;
    analysis.textContent = s.analysis ? s.analysis.text : '';
    analysis.className = 'analysis' + (s.analysis ? ' ' + s.analysis.verdict : '');

    var hadFocus = document.activeElement && document.activeElement.parentNode === $('choices');
    var choices = $('choices');
    choices.textContent = '';
    s.choices.forEach(function (c) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = c.label;
      b.dataset.actor = c.actor;
      b.dataset.kind = c.kind;
      if (c.kind !== 'step') b.className = 'fault';
      b.addEventListener('click', function () {
        send('POST', '/api/choose?actor=' + c.actor + '&kind=' + encodeURIComponent(c.kind));
      });
      choices.appendChild(b);
    });
    if (!s.choices.length) {
      var p = document.createElement('p');
      p.textContent = s.status === 'violated' ? 'The invariant broke: undo to try another way.' : 'No actor can move.';
      choices.appendChild(p);
    }
    if (hadFocus) {
      var first = choices.querySelector('button') || $('undo');
      first.focus();
    }
    $('undo').disabled = s.steps.length === 0;

    list($('world'), s.world, 'nothing yet');
    list($('waiting'), s.waiting, 'nobody waits');

    var thead = $('timeline').tHead, tbody = $('timeline').tBodies[0];
    thead.textContent = '';
    tbody.textContent = '';
    var hr = thead.insertRow();
    ['Time'].concat(s.actors).forEach(function (a) {
      var th = document.createElement('th');
      th.scope = 'col';
      th.textContent = a;
      hr.appendChild(th);
    });
    s.steps.forEach(function (step, t) {
      var tr = tbody.insertRow();
      var th = document.createElement('th');
      th.scope = 'row';
      th.textContent = 'T' + t;
      tr.appendChild(th);
      s.actors.forEach(function (_, a) {
        var td = tr.insertCell();
        td.textContent = a === step.actor ? step.text : '-';
      });
    });
    $('token').textContent = s.token ? 'replay: racelab replay ' + s.id + ' ' + s.token : '';
    // The server draws the diagram; it escapes every label.
    $('diagram').innerHTML = s.svg || '<p>No step yet.</p>';
  }

  $('scenario').addEventListener('change', function (e) {
    send('POST', '/api/scenario?id=' + encodeURIComponent(e.target.value));
  });
  $('undo').addEventListener('click', function () { send('POST', '/api/undo'); });
  $('reset').addEventListener('click', function () { send('POST', '/api/reset'); });
  $('solve').addEventListener('click', function () { send('POST', '/api/solve'); });
  send('GET', '/api/state');
})();
