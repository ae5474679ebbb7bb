// A live section: the server sends it again, rendered, after each change of what it shows (server-sent events).
// data-updates may carry the page's own query (the track record's period); the revision is added to it.
(function () {
  const section = document.querySelector("[data-updates]");
  const url = new URL(section.dataset.updates, window.location.href);
  url.searchParams.set("since", section.dataset.revision);
  const source = new EventSource(url.pathname + url.search);
  source.onmessage = function (event) {
    section.innerHTML = JSON.parse(event.data).html;
  };
})();
