/* The dashboard's small script: the browser's local time (UTC on hover), buttons that say
   they are working and cannot be pressed twice, and "Copy" for checksums. The pages work
   without it. */
(function () {
    "use strict";

    function pad(n) { return String(n).padStart(2, "0"); }

    function localTimes(root) {
        root.querySelectorAll("time.stanza-time[datetime]").forEach(function (el) {
            var when = new Date(el.getAttribute("datetime"));
            if (isNaN(when.getTime())) { return; }
            var zone = "";
            try {
                var parts = new Intl.DateTimeFormat([], { timeZoneName: "short" }).formatToParts(when);
                zone = (parts.find(function (p) { return p.type === "timeZoneName"; }) || {}).value || "";
            } catch (e) { /* no Intl: keep the server's time */ return; }
            el.textContent = when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate()) +
                " " + pad(when.getHours()) + ":" + pad(when.getMinutes()) + ":" + pad(when.getSeconds()) +
                (zone ? " " + zone : "");
        });
    }

    function busyButtons(root) {
        root.querySelectorAll("button[data-busy-text]").forEach(function (button) {
            var form = button.form;
            if (!form) { return; }
            form.addEventListener("submit", function (event) {
                if (form.dataset.busy) { event.preventDefault(); return; }
                form.dataset.busy = "1";
                form.setAttribute("aria-busy", "true");
                // Disabled after this event, so the button's own name and value are still sent.
                setTimeout(function () {
                    button.disabled = true;
                    button.classList.add("stanza-busy");
                    button.textContent = button.dataset.busyText;
                }, 0);
            });
        });
    }

    function copyButtons(root) {
        root.querySelectorAll("button[data-copy]").forEach(function (button) {
            button.addEventListener("click", function () {
                var text = button.dataset.copy;
                var done = function () {
                    button.textContent = "Copied";
                    setTimeout(function () { button.textContent = "Copy"; }, 2000);
                };
                if (navigator.clipboard && window.isSecureContext) {
                    navigator.clipboard.writeText(text).then(done, function () { selectFallback(button, text, done); });
                } else {
                    selectFallback(button, text, done);
                }
            });
        });
    }

    function selectFallback(button, text, done) {
        var area = document.createElement("textarea");
        area.value = text;
        area.setAttribute("readonly", "");
        area.style.position = "fixed";
        area.style.opacity = "0";
        document.body.appendChild(area);
        area.select();
        try { if (document.execCommand("copy")) { done(); } } finally { area.remove(); }
    }

    document.addEventListener("DOMContentLoaded", function () {
        localTimes(document);
        busyButtons(document);
        copyButtons(document);
    });
})();
