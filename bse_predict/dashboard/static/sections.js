// A live section: the server sends it again, rendered, after each change of what it shows (server-sent events).
(function () {
  const section = document.querySelector("[data-updates]");
  const source = new EventSource(section.dataset.updates + "?since=" + section.dataset.revision);
  source.onmessage = function (event) {
    section.innerHTML = JSON.parse(event.data).html;
  };
})();
