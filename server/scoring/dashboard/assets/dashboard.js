// Draws every chart of a dashboard page from the figure JSON the server embedded beside it.
// Served from the service itself (no inline script, no CDN), so a strict CSP holds.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-figure]").forEach(function (node) {
    var source = document.getElementById(node.dataset.figure);
    var figure = JSON.parse(source.textContent);
    Plotly.newPlot(node, figure.data, figure.layout, {displaylogo: false, responsive: true})
      .then(function () { node.dataset.rendered = "true"; });
  });
});
