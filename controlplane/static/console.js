// The edgefleet console's script: it only enhances pages that already read without it.
// - <time datetime="...Z"> elements are shown in the browser's time zone;
// - charts (JSON embedded next to a .chart-plot) are drawn with the vendored uPlot;
// - <body data-live="/events?..."> subscribes to server-sent events and swaps the live regions
//   the server sends ("fragment" events: {id, html}); EventSource reconnects by itself.
(function () {
  "use strict";

  var thisYear = new Date().getFullYear();
  var sameYear = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  var otherYear = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });

  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) return;
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.title = el.textContent;
      el.textContent = (when.getFullYear() === thisYear ? sameYear : otherYear).format(when);
      el.dataset.local = "1";
    });
  }

  var COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a"];

  function formatValue(value, unit) {
    if (value === null || value === undefined) return "\u2014";
    var digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
    return value.toFixed(digits) + "\u00a0" + unit;
  }

  function drawChart(el) {
    if (typeof uPlot === "undefined" || el.dataset.drawn) return;
    var source = document.getElementById(el.dataset.chart);
    if (!source) return;
    var chart = JSON.parse(source.textContent);
    var data = [chart.x].concat(chart.series.map(function (s) { return s.values; }));
    var series = [{}].concat(chart.series.map(function (s, i) {
      return {
        label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
        value: function (u, v) { return formatValue(v, s.unit); },
      };
    }));
    var units = chart.series.map(function (s) { return s.unit; })
      .filter(function (u, i, all) { return all.indexOf(u) === i; }).join(", ");
    var width = Math.max(200, el.clientWidth);
    var plot = new uPlot({
      width: width, height: 180, series: series,
      scales: { x: { time: true } },
      axes: [{}, { label: units, size: 60 }],
      legend: { live: true },
    }, data, el);
    el.dataset.drawn = "1";
    el.classList.add("drawn");
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        plot.setSize({ width: Math.max(200, el.clientWidth), height: 180 });
      }).observe(el);
    }
  }

  function drawCharts(root) {
    root.querySelectorAll(".chart-plot[data-chart]").forEach(drawChart);
  }

  function swap(id, html) {
    var el = document.getElementById(id);
    if (!el) return;
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var first = holder.content.firstElementChild;
    if (first && first.id === id && holder.content.childElementCount === 1) {
      el.replaceWith(first);  // a table row: the fragment is the element itself
      el = first;
    } else {
      el.innerHTML = html;  // a region: the fragment is its content
    }
    el.dataset.updated = String(Date.now());
    localizeTimes(el);
    drawCharts(el);
  }

  function live(url) {
    var status = document.getElementById("live-status");
    function show(on, text) {
      if (!status) return;
      status.hidden = false;
      status.className = "live-status " + (on ? "on" : "off");
      status.textContent = text;
    }
    var source = new EventSource(url);
    source.addEventListener("open", function () { show(true, "live"); });
    source.addEventListener("fragment", function (event) {
      var data = JSON.parse(event.data);
      swap(data.id, data.html);
      document.body.dataset.lastEvent = String(Date.now());
    });
    source.addEventListener("error", function () {
      show(false, "reconnecting\u2026");
      if (source.readyState === EventSource.CLOSED) {  // refused: try again later ourselves
        setTimeout(function () { live(url); }, 5000);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    drawCharts(document);
    var url = document.body.dataset.live;
    if (url && window.EventSource) live(url);
  });
})();
