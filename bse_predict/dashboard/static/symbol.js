// The candle chart with one marker per call (lightweight-charts 5).
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const element = document.getElementById("chart");
  const chart = LightweightCharts.createChart(element, {
    height: 420, layout: { background: { color: "#ffffff" }, textColor: "#333" },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  // Without candles in the lookback the calls' closes are drawn as a line, so the markers still have a home.
  const series = data.candles.length
    ? chart.addSeries(LightweightCharts.CandlestickSeries, {})
    : chart.addSeries(LightweightCharts.LineSeries, {});
  series.setData(data.candles.length ? data.candles : data.calls.map((c) => ({ time: c.time, value: c.close })));
  LightweightCharts.createSeriesMarkers(series, data.markers);
  chart.timeScale().fitContent();
  window.dashboardChart = { markers: data.markers, candles: data.candles };
})();
