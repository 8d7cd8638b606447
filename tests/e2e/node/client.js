// A consumer written against the npm "oauth" library (OAuth 1.0A client), driven step
// by step by tests/e2e/test_dance_node.py:
//
//   node client.js '<json>'
//
// with {"step": "request-token" | "access-token" | "get", "base": "http://127.0.0.1:PORT",
//       "consumerKey", "consumerSecret" or "privateKey", "signatureMethod",
//       "callback", "token", "tokenSecret", "verifier", "path"}.
// Prints one JSON object: the step's result, or {"error": {"statusCode", "data"}}.
"use strict";

const { OAuth } = require("oauth");

const cfg = JSON.parse(process.argv[2]);
const base = cfg.base;
// The library takes the RSA private key in the consumer-secret argument for RSA-SHA1.
const secret = cfg.signatureMethod === "RSA-SHA1" ? cfg.privateKey : cfg.consumerSecret;
const client = new OAuth(
  base + "/plugins/servlet/oauth/request-token",
  base + "/plugins/servlet/oauth/access-token",
  cfg.consumerKey,
  secret,
  "1.0A",
  cfg.callback || null,
  cfg.signatureMethod,
);

function done(err, result) {
  if (err) {
    process.stdout.write(JSON.stringify({ error: { statusCode: err.statusCode || null,
                                                   data: String(err.data || err) } }));
  } else {
    process.stdout.write(JSON.stringify(result));
  }
}

switch (cfg.step) {
  case "request-token":
    client.getOAuthRequestToken((err, token, tokenSecret, results) =>
      done(err, { token, tokenSecret, results }));
    break;
  case "access-token":
    client.getOAuthAccessToken(cfg.token, cfg.tokenSecret, cfg.verifier,
      (err, token, tokenSecret, results) => done(err, { token, tokenSecret, results }));
    break;
  case "get":
    client.get(base + cfg.path, cfg.token, cfg.tokenSecret,
      (err, data, res) => done(err, { statusCode: res && res.statusCode,
                                      body: JSON.parse(data) }));
    break;
  default:
    done(new Error("unknown step " + cfg.step));
}
