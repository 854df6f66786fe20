// Two editors save the same change record (seed 002), with Node's fetch.
//
// Each save sends If-Match with the ETag the editor loaded. The second
// editor's save gets 412 Precondition Failed instead of overwriting the
// first one's work; it reloads, merges its edit into the new version and
// saves again. Both edits survive.
//
// Environment: IFMATCH_URL (e.g. http://127.0.0.1:8080), IFMATCH_TOKEN.

const BASE = process.env.IFMATCH_URL.replace(/\/$/, "");
const AUTH = { Authorization: `Bearer ${process.env.IFMATCH_TOKEN}` };
const key = `archive/CHG-${Date.now()}-${Math.floor(Math.random() * 1e6)}.json`;
const url = `${BASE}/v1/objects/${key}`;

/** Loads the change: its JSON and the ETag to send back on save. */
async function load() {
  const r = await fetch(url, { headers: AUTH });
  if (r.status !== 200) throw new Error(`load: ${r.status} ${await r.text()}`);
  return { doc: await r.json(), etag: r.headers.get("etag") };
}

/** Saves `doc` only over `etag`: true if saved, false on 412 (someone saved first). */
async function save(doc, etag) {
  const r = await fetch(url, {
    method: "PUT",
    headers: { ...AUTH, "Content-Type": "application/json", "If-Match": etag },
    body: JSON.stringify(doc),
  });
  if (r.status === 412) {
    const err = await r.json(); // {"error": "precondition_failed", "key", "current_etag", ...}
    console.log(`  412: ${err.message}`);
    return false;
  }
  if (!r.ok) throw new Error(`save: ${r.status} ${await r.text()}`);
  return true;
}

/** An editor's session: apply `edit` to what it loaded; on 412 reload, merge, save again. */
async function editAndSave(name, loaded, edit) {
  let { doc, etag } = loaded;
  for (let attempt = 1; attempt <= 5; attempt++) {
    if (await save(edit(structuredClone(doc)), etag)) {
      console.log(`${name}: saved on attempt ${attempt}`);
      return;
    }
    console.log(`${name}: the change was modified by someone else; reloading and merging`);
    ({ doc, etag } = await load());
  }
  throw new Error(`${name}: gave up`);
}

// Create the change record (If-None-Match: * never overwrites an existing one).
const created = await fetch(url, {
  method: "PUT",
  headers: { ...AUTH, "Content-Type": "application/json", "If-None-Match": "*" },
  body: JSON.stringify({ id: key, modifications: [] }),
});
if (created.status !== 201) throw new Error(`create: ${created.status}`);

// Both editors open the edit page: same version.
const pageA = await load();
const pageB = await load();
const addModification = (who) => (doc) => {
  doc.modifications.push({ by: who, at: new Date().toISOString() });
  return doc;
};
await editAndSave("editor A", pageA, addModification("A"));
await editAndSave("editor B", pageB, addModification("B")); // 412, reload, merge, save

const { doc } = await load();
const who = doc.modifications.map((m) => m.by);
if (who.join(",") !== "A,B") throw new Error(`lost an edit: ${JSON.stringify(doc)}`);
console.log(`both edits kept: ${JSON.stringify(who)}`);
