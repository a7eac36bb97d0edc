// Behaviour the console's pages ask for by data attributes, so no page carries inline script
// (the Content-Security-Policy allows scripts from this origin's files only).
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field instanceof HTMLSelectElement && field.dataset.autosubmit !== undefined && field.form) {
    field.form.requestSubmit();
  }
});
