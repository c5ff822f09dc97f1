// A test double of Stripe.js v3 (tests/web/stripe_edge.py serves it at /v3/): exactly
// the part static/pay.js uses, so a Chromium test can type a card and pay through
// localstripe.  Like the real one, the card is read by Stripe's code only: the inputs
// have no `name`, so the page's own form never posts them, and the confirmation goes
// to Stripe's API (here: the edge's origin, the origin this script was loaded from)
// with the publishable key and the PaymentIntent's client secret, as Stripe.js sends it:
//   POST /v1/payment_intents/<pi>/confirm
//   key, client_secret, payment_method_data[type]=card,
//   payment_method_data[card][number|exp_month|exp_year|cvc]
// It resolves to {paymentIntent} or {error: {type, code, message, ...}}.
(function () {
  "use strict";
  const script = document.currentScript;
  const apiBase = new URL(script ? script.src : window.location.href).origin;
  const SECRET = /^(pi_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+$/;

  function integrationError(message) {
    const err = new Error(message);
    err.name = "IntegrationError";
    return err;
  }

  function validation(code, message) {
    return { error: { type: "validation_error", code: code, message: message } };
  }

  function digits(text) {
    return String(text || "").replace(/[\s-]/g, "");
  }

  function luhn(number) {
    let sum = 0;
    for (let i = 0; i < number.length; i++) {
      let d = Number(number[number.length - 1 - i]);
      if (i % 2 === 1) {
        d *= 2;
        if (d > 9) d -= 9;
      }
      sum += d;
    }
    return sum % 10 === 0;
  }

  // The card element: three plain inputs, marked data-stripe-field, never named.
  function CardElement(owner) {
    this._owner = owner;
    this._inputs = null;
  }

  CardElement.prototype.mount = function (target) {
    const host = typeof target === "string" ? document.querySelector(target) : target;
    if (!host || !host.appendChild) {
      throw integrationError("The selector you specified (" + target + ") applies to no DOM elements.");
    }
    if (this._inputs) throw integrationError("This Element is already mounted.");
    const fields = [
      ["number", "Card number", "1234 1234 1234 1234", "cc-number", 23],
      ["expiry", "Expiration date", "MM / YY", "cc-exp", 7],
      ["cvc", "Security code", "CVC", "cc-csc", 4],
    ];
    const wrap = document.createElement("div");
    wrap.className = "stripe-double-card";
    this._inputs = {};
    for (const [field, label, placeholder, autocomplete, size] of fields) {
      const input = document.createElement("input");
      input.type = "text";
      input.inputMode = "numeric";
      input.autocomplete = autocomplete;
      input.placeholder = placeholder;
      input.size = size;
      input.setAttribute("aria-label", label);
      input.setAttribute("data-stripe-field", field);
      wrap.appendChild(input);
      this._inputs[field] = input;
    }
    host.appendChild(wrap);
  };

  CardElement.prototype._card = function () {
    if (!this._inputs) return validation("incomplete_number", "Your card number is incomplete.");
    const number = digits(this._inputs.number.value);
    if (!/^[0-9]{13,19}$/.test(number)) {
      return validation("incomplete_number", "Your card number is incomplete.");
    }
    if (!luhn(number)) return validation("invalid_number", "Your card number is invalid.");
    const exp = /^\s*([0-9]{1,2})\s*\/?\s*([0-9]{2})\s*$/.exec(this._inputs.expiry.value);
    if (!exp) return validation("incomplete_expiry", "Your card's expiration date is incomplete.");
    const month = Number(exp[1]);
    const year = 2000 + Number(exp[2]);
    if (month < 1 || month > 12) {
      return validation("invalid_expiry_month", "Your card's expiration date is invalid.");
    }
    const now = new Date();
    if (year < now.getFullYear() || (year === now.getFullYear() && month < now.getMonth() + 1)) {
      return validation("invalid_expiry_year_past", "Your card's expiration year is in the past.");
    }
    const cvc = digits(this._inputs.cvc.value);
    if (!/^[0-9]{3,4}$/.test(cvc)) {
      return validation("incomplete_cvc", "Your card's security code is incomplete.");
    }
    return { card: { number: number, exp_month: String(month), exp_year: exp[2], cvc: cvc } };
  };

  function Elements(owner) {
    this._owner = owner;
  }

  Elements.prototype.create = function (type) {
    if (type !== "card") throw integrationError("This double of Stripe.js knows only the card Element, not " + type + ".");
    return new CardElement(this._owner);
  };

  function StripeDouble(key) {
    if (typeof key !== "string" || !/^pk_/.test(key)) {
      throw integrationError("Invalid value for Stripe(): apiKey should be a publishable key (pk_...).");
    }
    this._key = key;
  }

  StripeDouble.prototype.elements = function () {
    return new Elements(this);
  };

  StripeDouble.prototype.confirmCardPayment = async function (clientSecret, data) {
    const m = SECRET.exec(String(clientSecret || ""));
    if (!m) throw integrationError("Invalid value for confirmCardPayment: the client secret is not a PaymentIntent's.");
    const element = data && data.payment_method && data.payment_method.card;
    if (!(element instanceof CardElement) || element._owner !== this) {
      throw integrationError("Invalid value for confirmCardPayment: payment_method.card should be a card Element of this Stripe.");
    }
    const read = element._card();
    if (read.error) return read;
    const body = new URLSearchParams();
    body.append("key", this._key);
    body.append("client_secret", clientSecret);
    body.append("payment_method_data[type]", "card");
    for (const name of ["number", "exp_month", "exp_year", "cvc"]) {
      body.append("payment_method_data[card][" + name + "]", read.card[name]);
    }
    let answer;
    try {
      answer = await fetch(apiBase + "/v1/payment_intents/" + m[1] + "/confirm", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: body.toString(),
        credentials: "omit",
      });
    } catch (e) {
      return { error: { type: "api_connection_error", message: "We could not reach Stripe: check your connection and try again." } };
    }
    let json;
    try {
      json = await answer.json();
    } catch (e) {
      return { error: { type: "api_error", message: "Stripe answered something unexpected." } };
    }
    if (!answer.ok || json.error) {
      return { error: json.error || { type: "api_error", message: "The payment failed." } };
    }
    return { paymentIntent: json };
  };

  window.Stripe = function (key) {
    return new StripeDouble(key);
  };
  window.Stripe.version = 3;
})();
