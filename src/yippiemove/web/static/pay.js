// The card payment page (issue 20, templates/pay.html): Stripe.js's card element, and
// one confirmation at a time -- a double click or a second submit while the first is
// on its way does nothing (the PaymentIntent is one per payment on the server too).
(function () {
  "use strict";
  const form = document.getElementById("pay-form");
  if (!form || typeof Stripe !== "function") return;
  const stripe = Stripe(form.dataset.key);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const button = form.querySelector("[data-pay-button]");
  const error = form.querySelector("[data-pay-error]");
  let busy = false;
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) return;
    if (form.dataset.failed) {
      // A declined attempt ends its PaymentIntent: the page makes a fresh one.
      window.location.reload();
      return;
    }
    busy = true;
    button.disabled = true;
    error.hidden = true;
    button.textContent = "Paying…";
    let result;
    try {
      result = await stripe.confirmCardPayment(form.dataset.secret, {
        payment_method: { card: card },
      });
    } catch (e) {
      result = { error: { message: String(e && e.message ? e.message : e) } };
    }
    if (result.error) {
      error.textContent = (result.error.message || "The payment failed.") + " Nothing was charged.";
      error.hidden = false;
      form.dataset.failed = "1";
      button.textContent = "Try another card";
      button.disabled = false;
      busy = false;
      return;
    }
    window.location.assign(form.dataset.done);
  });
})();
