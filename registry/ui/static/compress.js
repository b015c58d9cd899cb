// The compress form shows the fieldsets of the chosen method only. Hidden ones are also
// disabled, so what they hold is not sent. Without this script every fieldset shows and
// the server takes what applies (progressive enhancement).
"use strict";
(function () {
  var method = document.getElementById("method");
  if (!method) { return; }

  function show() {
    var sets = document.querySelectorAll("#compress-form fieldset[data-method]");
    Array.prototype.forEach.call(sets, function (set) {
      var other = set.dataset.method !== method.value;
      set.hidden = other;
      set.disabled = other;
    });
  }

  method.addEventListener("change", show);
  show();
}());
