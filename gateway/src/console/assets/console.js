// Portcullis console: copy buttons. Every page works without this script; it only turns
// each element with a data-copy attribute into a button that copies that text.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy the text";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
});
