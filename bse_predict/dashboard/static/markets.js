// Live rows: the server sends each changed symbol's row, rendered, over server-sent events.
(function () {
  const table = document.getElementById("markets");
  const body = table.tBodies[0];
  const source = new EventSource("/updates?since=" + table.dataset.revision);
  source.onmessage = function (event) {
    for (const update of JSON.parse(event.data)) {
      const holder = document.createElement("tbody");
      holder.innerHTML = update.html.trim();
      const row = holder.firstElementChild;
      const old = document.getElementById("row-" + update.symbol);
      if (old) {
        old.replaceWith(row);
      } else {
        const after = Array.from(body.rows).find((r) => r.dataset.symbol > update.symbol);
        body.insertBefore(row, after || null);
      }
      row.classList.add("fresh");
      const empty = document.getElementById("empty");
      if (empty) empty.remove();
    }
  };
})();
