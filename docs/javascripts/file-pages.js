// Opened from disk (file://), a link to a page's folder ("guides/") shows
// the folder's listing, and the search cannot load its index. This points
// each such link at the folder's index.html and says how to get search.
(function () {
  if (location.protocol !== "file:") return;

  function pointAtPage(link) {
    var href = link.getAttribute("href");
    if (!href || href.charAt(0) === "#" || /^[a-z][a-z0-9+.-]*:/i.test(href)) {
      return;
    }
    var cut = href.search(/[?#]/);
    var path = cut < 0 ? href : href.slice(0, cut);
    var rest = cut < 0 ? "" : href.slice(cut);
    if (path === "." || path === ".." || /\/\.\.?$/.test(path)) path += "/";
    if (path.slice(-1) === "/") {
      link.setAttribute("href", path + "index.html" + rest);
    }
  }

  function run() {
    document.querySelectorAll("a[href]").forEach(pointAtPage);
    var notice = document.createElement("p");
    notice.className = "file-pages-notice";
    notice.textContent =
      "Opened from disk: the links work, the search does not. To search, " +
      "serve the site (python -m http.server -d site) and open " +
      "http://localhost:8000.";
    var article = document.querySelector("article") || document.body;
    article.insertBefore(notice, article.firstChild);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
