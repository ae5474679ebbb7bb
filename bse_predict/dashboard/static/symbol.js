// The candle chart with one marker per call (lightweight-charts 5), kept live: after each change of the
// symbol (a closed candle, a call, an outcome, a shadow call) the server sends the chart's data and the
// calls table again over server-sent events; the chart is redrawn in place, the view the reader chose kept.
(function () {
  const element = document.getElementById("chart");
  const calls = document.querySelector("#calls tbody");
  const chart = LightweightCharts.createChart(element, {
    height: 420, layout: { background: { color: "#ffffff" }, textColor: "#333" },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  let series = null, markers = null, drawnCandles = null;

  function draw(data) {
    // Without candles in the lookback the calls' closes are drawn as a line, so the markers still have a home.
    const withCandles = data.candles.length > 0;
    if (series === null || drawnCandles !== withCandles) {
      if (series !== null) chart.removeSeries(series);
      series = chart.addSeries(withCandles ? LightweightCharts.CandlestickSeries : LightweightCharts.LineSeries, {});
      markers = LightweightCharts.createSeriesMarkers(series, []);
      drawnCandles = withCandles;
    }
    series.setData(withCandles ? data.candles : data.calls.map((c) => ({ time: c.time, value: c.close })));
    markers.setMarkers(data.markers);
    window.dashboardChart = { markers: data.markers, candles: data.candles, updates: (window.dashboardChart || { updates: -1 }).updates + 1 };
  }

  draw(JSON.parse(document.getElementById("chart-data").textContent));
  chart.timeScale().fitContent();
  const source = new EventSource(element.dataset.updates + "&since=" + element.dataset.revision);
  source.onmessage = function (event) {
    const update = JSON.parse(event.data);
    draw(update.chart);
    calls.innerHTML = update.calls;
  };
})();
