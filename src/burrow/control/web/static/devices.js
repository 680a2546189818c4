// Progressive enhancement of the device pages: make the WireGuard key in the browser.
// Without this script (or without WebCrypto X25519) the server makes the key instead.
(function () {
  "use strict";
  var PREFIX = "burrow-key:";

  function b64(buffer) {
    var bytes = new Uint8Array(buffer), text = "";
    for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return btoa(text);
  }

  function generate() {
    return crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  }

  async function keyPair() {
    var pair = await generate();
    var pkcs8 = await crypto.subtle.exportKey("pkcs8", pair.privateKey);
    var raw = await crypto.subtle.exportKey("raw", pair.publicKey);
    // An X25519 PKCS#8 document ends with the 32 bytes of the private key.
    return { privateKey: b64(pkcs8.slice(pkcs8.byteLength - 32)), publicKey: b64(raw) };
  }

  async function supported() {
    if (!window.crypto || !crypto.subtle || !window.sessionStorage) return false;
    try { await generate(); return true; } catch (e) { return false; }
  }

  async function enhanceForms() {
    var forms = document.querySelectorAll("form[data-browser-key]");
    if (!forms.length || !(await supported())) return;
    forms.forEach(function (form) {
      var option = form.querySelector("[data-browser-key-option]");
      if (option) option.hidden = false;
      form.addEventListener("submit", function (event) {
        var box = form.querySelector("input[name=browser_key]");
        var target = form.querySelector("input[name=public_key]");
        if (!box || !box.checked || !target || target.value) return;
        event.preventDefault();
        keyPair().then(function (pair) {
          sessionStorage.setItem(PREFIX + pair.publicKey, pair.privateKey);
          target.value = pair.publicKey;
        }).catch(function () { /* the server makes the key instead */ })
          .then(function () { form.submit(); });
      });
    });
  }

  function fillConfig() {
    var pre = document.querySelector("[data-config-template]");
    if (!pre) return;
    var storageKey = PREFIX + pre.getAttribute("data-public-key");
    var privateKey = sessionStorage.getItem(storageKey);
    if (!privateKey) return;
    var text = pre.textContent.replace(/^# PrivateKey = .*$/m, "PrivateKey = " + privateKey);
    pre.textContent = text;
    var link = document.querySelector("[data-config-download]");
    if (link) {
      link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      link.hidden = false;
      link.addEventListener("click", function () { sessionStorage.removeItem(storageKey); });
    }
    var note = document.querySelector("[data-key-missing]");
    if (note) note.textContent = "The private key made by your browser is in the file below; keep it safe, the server never saw it.";
  }

  enhanceForms();
  fillConfig();
})();
