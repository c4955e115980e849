/* The dashboard's small script: the browser's local time (UTC on hover) and the time
   picker in it, buttons that say they are working and cannot be pressed twice, the progress
   of "Back up now" while its request runs, and "Copy" for checksums. The pages work without
   it. */
(function () {
    "use strict";

    function pad(n) { return String(n).padStart(2, "0"); }

    function zoneName(when) {
        var parts = new Intl.DateTimeFormat([], { timeZoneName: "short" }).formatToParts(when);
        return (parts.find(function (p) { return p.type === "timeZoneName"; }) || {}).value || "";
    }

    function localDate(when) {
        return when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate());
    }

    function localClock(when) {
        return pad(when.getHours()) + ":" + pad(when.getMinutes()) + ":" + pad(when.getSeconds());
    }

    function localTimes(root) {
        root.querySelectorAll("time.stanza-time[datetime]").forEach(function (el) {
            var when = new Date(el.getAttribute("datetime"));
            if (isNaN(when.getTime())) { return; }
            var zone = "";
            try { zone = zoneName(when); } catch (e) { return; } /* no Intl: keep the server's */
            var date = el.querySelector(".stanza-date"), clock = el.querySelector(".stanza-clock");
            var time = localClock(when) + (zone ? " " + zone : "");
            if (date && clock) {
                date.textContent = localDate(when);
                clock.textContent = time;
            } else {
                el.textContent = localDate(when) + " " + time;
            }
        });
    }

    /* The point-in-time picker takes the browser's local time: it says which zone, sends the
       zone's name with the time (the server converts), and starts at the window's end. */
    function timePickers(root) {
        root.querySelectorAll("input[data-stanza-local-time]").forEach(function (input) {
            var zone;
            try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
            if (!zone) { return; }
            var form = input.form;
            var field = form.querySelector("input[name=tz]");
            if (field) { field.value = zone; }
            root.querySelectorAll("[data-stanza-zone-name]").forEach(function (el) {
                el.textContent = zone;
            });
            var end = new Date(input.dataset.end || "");
            if (!input.value && !isNaN(end.getTime())) {
                input.value = localDate(end) + " " + localClock(end);
            }
        });
    }

    /* A link to a folded section (#error-output) unfolds it. */
    function openTarget() {
        var target = location.hash && document.getElementById(location.hash.slice(1));
        if (target && target.tagName === "DETAILS") { target.open = true; }
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
                if (form.dataset.progressUrl) { followProgress(form); }
            });
        });
    }

    /* While the form's request runs (the page stays until its answer arrives), ask the page
       what is running and how far it got, and show it under the button. A page opened while
       an operation runs (`watching`) follows it too, and says when it has finished. */
    function followProgress(form, watching) {
        var box = document.getElementById(form.dataset.progressBox);
        if (!box || !window.fetch) { return; }
        var asking = false, timer;
        function ask() {
            if (asking) { return; }
            asking = true;
            fetch(form.dataset.progressUrl, {
                headers: { "Accept": "application/json" }, credentials: "same-origin"
            }).then(function (response) {
                return response.ok ? response.json() : null;
            }).then(function (answer) {
                if (answer && answer.running) {
                    box.innerHTML = answer.html; /* the server's template, escaped there */
                    box.hidden = false;
                    localTimes(box);
                } else if (answer && watching) {
                    clearInterval(timer);
                    box.textContent = box.dataset.finishedText;
                }
            }).catch(function () { /* the next try may reach it */ }).then(function () {
                asking = false;
            });
        }
        setTimeout(ask, 300);
        timer = setInterval(ask, watching ? 1000 : 700);
    }

    function watchOperation(root) {
        var box = root.getElementById("operation");
        var form = root.querySelector("form[data-progress-url]");
        if (box && form && !box.hidden) { followProgress(form, true); }
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
        timePickers(document);
        openTarget();
        busyButtons(document);
        watchOperation(document);
        copyButtons(document);
    });
})();
