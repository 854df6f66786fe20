// Screenshot workers that never take the same screenshot twice (seed 004),
// with Node's fetch and /v1/idempotency.
//
// Three containers receive the same SQS message. Each claims the message's
// idempotency key before working: one gets 201 (do the work, then store the
// result), the others get 409 in_progress (someone is on it) or, once it is
// done, 200 with the stored result. A redelivery after a crash would get
// the claim back once the claim goes stale (10 minutes on the server).
//
// Environment: IFMATCH_URL (e.g. http://127.0.0.1:8080), IFMATCH_TOKEN.

const BASE = process.env.IFMATCH_URL.replace(/\/$/, "");
const AUTH = { Authorization: `Bearer ${process.env.IFMATCH_TOKEN}` };
const screenshotId = `shot-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const keyUrl = `${BASE}/v1/idempotency/screenshots/${screenshotId}`;
const message = { screenshotId, url: "https://example.com/pricing" };

let screenshotsTaken = 0;
async function takeScreenshot(msg) {
  screenshotsTaken += 1;
  await new Promise((resolve) => setTimeout(resolve, 200)); // the browser at work
  return { s3Url: `s3://screenshots/${msg.screenshotId}.png` };
}

/** What one container does with one delivery of the message. */
async function handle(container, msg) {
  const claim = await fetch(keyUrl, {
    method: "POST",
    headers: { ...AUTH, "Content-Type": "application/json" },
    body: JSON.stringify({ payload: msg }),
  });
  const body = await claim.json();
  if (claim.status === 200) return `${container}: already done -> ${body.result.s3Url}`;
  if (claim.status === 409 && body.error === "in_progress") return `${container}: in progress elsewhere, skipped`;
  if (claim.status !== 201) throw new Error(`${container}: ${claim.status} ${JSON.stringify(body)}`);
  try {
    const result = await takeScreenshot(msg);
    const done = await fetch(keyUrl, {
      method: "PUT",
      headers: { ...AUTH, "Content-Type": "application/json", "Idempotency-Claim": body.claim_id },
      body: JSON.stringify({ result }),
    });
    if (done.status !== 200) throw new Error(`complete: ${done.status}`);
    return `${container}: took the screenshot -> ${result.s3Url}`;
  } catch (e) {
    // Give the claim up so a redelivery can try again.
    await fetch(keyUrl, { method: "DELETE", headers: { ...AUTH, "Idempotency-Claim": body.claim_id } });
    throw e;
  }
}

// Three containers get the message at once, then it is redelivered once more.
for (const line of await Promise.all(["c1", "c2", "c3"].map((c) => handle(c, message)))) console.log(line);
console.log(await handle("c4 (redelivery)", message));
if (screenshotsTaken !== 1) throw new Error(`took ${screenshotsTaken} screenshots, expected 1`);

// The record, as an operator sees it.
const record = await (await fetch(keyUrl, { headers: AUTH })).json();
if (record.state !== "completed") throw new Error(JSON.stringify(record));
console.log(`record: ${record.state}, payload sha256 ${record.payload_hash.slice(0, 12)}..., result ${JSON.stringify(record.result)}`);

// The same id reused for a different request is caught, not silently deduplicated.
const reused = await fetch(keyUrl, {
  method: "POST",
  headers: { ...AUTH, "Content-Type": "application/json" },
  body: JSON.stringify({ payload: { ...message, url: "https://example.com/other" } }),
});
if (reused.status !== 422) throw new Error(`expected 422 payload_mismatch, got ${reused.status}`);
console.log("one screenshot for four deliveries; a reused id with another payload: 422");
