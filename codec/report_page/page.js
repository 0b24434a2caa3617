// report.html: the A/B slider over decoded crops, and the line-up of each codec at a chosen rate.
"use strict";
(() => {
  const target = document.getElementById("target");

  // Each codec's entry closest to `rate` in log rate (the original has no rate).
  function lineup(entries, rate) {
    const best = new Map();
    entries.forEach((e, i) => {
      if (e.rate == null || e.rate <= 0) return;
      const d = Math.abs(Math.log(e.rate / rate));
      if (!best.has(e.codec) || d < best.get(e.codec).d) best.set(e.codec, { i, d });
    });
    return [...best.values()].map((b) => b.i);
  }

  function setUp(file) {
    const entries = JSON.parse(file.querySelector("script.entries").textContent);
    const panel = file.querySelector(".compare");
    const pick = { a: panel.querySelector(".pick-a"), b: panel.querySelector(".pick-b") };
    const img = { a: panel.querySelector(".img-a"), b: panel.querySelector(".img-b") };
    const cap = { a: panel.querySelector(".cap-a"), b: panel.querySelector(".cap-b") };
    const split = panel.querySelector(".split");
    const divider = panel.querySelector(".divider");
    const zoom = panel.querySelector(".zoom");
    const row = file.querySelector(".lineup");
    const figures = [...file.querySelectorAll(".all figure.crop")];

    for (const select of [pick.a, pick.b]) {
      entries.forEach((e, i) => select.add(new Option(e.rate == null ? e.label : `${e.label} (${e.rate.toPrecision(3)} bpp)`, i)));
    }

    function caption(slot) {
      const e = entries[pick[slot].value];
      cap[slot].replaceChildren(`${slot.toUpperCase()}: `, Object.assign(document.createElement("b"), { textContent: e.label }), ` · ${e.caption} `);
      if (e.full) cap[slot].append(Object.assign(document.createElement("a"), { href: e.full, textContent: "full image" }));
    }

    function show(slot, i) {
      pick[slot].value = i;
      img[slot].src = entries[i].crop;
      caption(slot);
      for (const f of file.querySelectorAll("figure.crop")) {
        const button = f.querySelector(`button[data-pick="${slot}"]`);
        f.classList.toggle(`sel-${slot}`, button != null && button.dataset.entry === String(i));
      }
    }

    function layout() {
      const z = Number(zoom.value);
      for (const slot of ["a", "b"]) img[slot].style.width = `${img.b.naturalWidth * z || 0}px`;
      const s = Number(split.value);
      img.a.style.clipPath = `inset(0 ${100 - s}% 0 0)`;
      divider.style.left = `${s}%`;
    }

    function choose(rate) {
      const picks = lineup(entries, rate);
      row.replaceChildren(...picks.map((i) => {
        const source = figures.find((f) => f.querySelector(`button[data-entry="${i}"]`));
        const copy = source.cloneNode(true);
        copy.querySelector("figcaption b").textContent = entries[i].label;
        return copy;
      }));
      show("a", picks[0] ?? 0);
      show("b", picks.length > 1 ? picks[1] : 0);
    }

    pick.a.addEventListener("change", () => show("a", pick.a.value));
    pick.b.addEventListener("change", () => show("b", pick.b.value));
    panel.querySelector(".swap").addEventListener("click", () => {
      const [a, b] = [pick.a.value, pick.b.value];
      show("a", b);
      show("b", a);
    });
    file.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-pick]");
      if (button) show(button.dataset.pick, button.dataset.entry);
    });
    split.addEventListener("input", layout);
    zoom.addEventListener("change", layout);
    img.b.addEventListener("load", layout);
    if (target) target.addEventListener("change", () => choose(Number(target.value)));
    choose(target ? Number(target.value) : 0.25);
  }

  document.querySelectorAll("details.file.image").forEach((file) => {
    if (file.querySelector("script.entries")) setUp(file);
  });
})();
