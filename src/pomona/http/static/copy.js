// The troubleshoot page's "copy the incident summary" button (issue 13). Without JavaScript the button
// stays hidden and the summary is a read-only text box to select and copy by hand.
(function () {
  "use strict";
  var button = document.getElementById("copy-summary");
  var text = document.getElementById("incident-summary");
  if (!button || !text) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    var done = function () { button.textContent = button.getAttribute("data-copied"); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.value).then(done, function () { text.select(); });
    } else {
      text.select();
      try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: copy by hand */ }
    }
  });
})();
