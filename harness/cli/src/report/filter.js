// Filter the index table by text and by verdict. The page works without it.
(function () {
  var text = document.getElementById('filter');
  var verdict = document.getElementById('verdict-filter');
  var shown = document.getElementById('shown');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#scenarios tbody tr'));
  function apply() {
    var q = text.value.trim().toLowerCase();
    var v = verdict.value;
    var n = 0;
    rows.forEach(function (row) {
      var ok = (!q || row.textContent.toLowerCase().indexOf(q) >= 0) && (!v || row.dataset.verdict === v);
      row.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n + ' of ' + rows.length + ' variants shown';
  }
  text.addEventListener('input', apply);
  verdict.addEventListener('change', apply);
  apply();
})();
