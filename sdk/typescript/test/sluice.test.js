// Runs a real sluice (built from this repository, or SLUICE_BIN) on a free loopback port and exercises the client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createSluiceClient, SluiceProblemError, HoldDeniedError, ProblemTypes } from "../src/index.js";

const repo = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../..");
const CHECK_TOKEN = "ts-sdk-check-token-0123456789";
const ADMIN_TOKEN = "ts-sdk-admin-token-0123456789";

let dir, proc, baseUrl, logs = "";

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "sluice-ts-"));
  let bin = process.env.SLUICE_BIN;
  if (!bin) {
    bin = join(dir, "sluice");
    execFileSync("go", ["build", "-o", bin, "."], { cwd: repo, stdio: "inherit" });
  }
  const config = join(dir, "sluice.yaml");
  writeFileSync(
    config,
    `store: memory
log:
  level: warn
policies:
  - {name: login, limit: 5, window: 1m}
  - {name: pair, limit: 2, window: 1h}
  - {name: trial, limit: 1, window: 1h, shadow: true}
  - {name: slots, limit: 3, window: 1m, algorithm: concurrency}
  - {name: quota, limit: 10, window: 1h}
`,
  );
  const tokens = join(dir, "tokens.yaml");
  writeFileSync(
    tokens,
    `- {name: edge, token: ${CHECK_TOKEN}, role: check}
- {name: ops, token: ${ADMIN_TOKEN}, role: admin}
`,
  );
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  proc = spawn(bin, ["serve", "-config", config], {
    env: { ...process.env, SLUICE_LISTEN: `127.0.0.1:${port}`, SLUICE_TOKENS_FILE: tokens },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (b) => (logs += b));
  proc.stderr.on("data", (b) => (logs += b));
  const deadline = Date.now() + 15000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`sluice exited with ${proc.exitCode}:\n${logs}`);
    try {
      if ((await fetch(`${baseUrl}/readyz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`sluice did not become ready:\n${logs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const checker = () => createSluiceClient({ baseUrl, token: CHECK_TOKEN });
const admin = () => createSluiceClient({ baseUrl, token: ADMIN_TOKEN });

/** Asserts that fn rejects with a SluiceProblemError of the given status and kind. */
async function rejectsWith(fn, status, kind) {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof SluiceProblemError, `not a SluiceProblemError: ${e}`);
    assert.equal(e.status, status, e.message);
    assert.equal(e.kind, kind);
    assert.equal(e.type, ProblemTypes[kind]);
    assert.equal(e.response.headers.get("Content-Type"), "application/problem+json");
    return e;
  }
  assert.fail(`expected a ${status} ${kind} problem`);
}

test("check admits until the limit, then denies with a delay", async () => {
  const c = checker();
  for (let i = 1; i <= 5; i++) {
    const d = await c.check({ policy: "login", key: "check-user" });
    assert.equal(d.allowed, true);
    assert.equal(d.remaining, 5 - i);
    assert.equal(d.limit, 5);
  }
  const d = await c.check({ policy: "login", key: "check-user" });
  assert.equal(d.allowed, false);
  assert.ok(d.retry_after_ms > 0 && d.retry_after_ms <= 60000, `retry_after_ms ${d.retry_after_ms}`);
  // cost 0 peeks
  const p = await c.check({ policy: "login", key: "other-user", cost: 0 });
  assert.equal(p.allowed, true);
  assert.equal(p.remaining, 4);
});

test("checks: atomic batches are all or nothing", async () => {
  const c = checker();
  let out = await c.checks([{ policy: "pair", key: "batch" }, { policy: "pair", key: "batch" }, { policy: "pair", key: "batch" }], { atomic: true });
  assert.equal(out.allowed, false);
  assert.deepEqual(out.decisions.map((d) => d.allowed), [true, true, false]);
  assert.equal((await c.getKey("pair", "batch")).remaining, 1, "the denied atomic batch recorded nothing");
  out = await c.checks([{ policy: "pair", key: "batch" }, { policy: "login", key: "batch", cost: 2 }]);
  assert.equal(out.allowed, true);
  assert.deepEqual(out.decisions.map((d) => d.remaining), [1, 3]);
});

test("authorize: allowed until the limit, then 429 with Retry-After", async () => {
  const c = checker();
  const first = await c.authorize({ policy: "pair", key: "10.0.0.1" });
  assert.deepEqual(first, { allowed: true, rateLimit: '"pair";r=1;t=3600', rateLimitPolicy: '"pair";q=2;w=3600' });
  assert.equal((await c.authorize({ policy: "pair", key: "10.0.0.1" })).allowed, true);
  const denied = await c.authorize({ policy: "pair", key: "10.0.0.1" });
  assert.equal(denied.allowed, false);
  assert.ok(Number.isInteger(denied.retryAfter) && denied.retryAfter > 3500 && denied.retryAfter <= 3600, `retryAfter ${denied.retryAfter}`);
  assert.equal(denied.problem.kind, "rate-limited");
  assert.equal(denied.problem.status, 429);
  assert.equal(denied.problem.response.headers.get("Cache-Control"), "no-store");
  // shadow policies always admit
  await c.authorize({ policy: "trial", key: "k" });
  assert.equal((await c.authorize({ policy: "trial", key: "k" })).allowed, true);
});

test("keys: peek consumes nothing, reset empties; keys with / and unicode", async () => {
  const c = checker();
  for (const key of ["tenant/42/user", "用户 ü?#%"]) {
    await c.check({ policy: "login", key, cost: 3 });
    for (let i = 0; i < 3; i++) {
      const d = await c.getKey("login", key);
      assert.equal(d.key, key);
      assert.equal(d.remaining, 1);
    }
    await admin().resetKey("login", key);
    assert.equal((await c.getKey("login", key)).remaining, 4);
  }
});

test("keys . and .. round-trip through getKey and resetKey (fetch drops them from paths, even as %2E)", async () => {
  const c = checker();
  for (const key of [".", "..", "...", "%2E", "a/.."]) {
    await c.check({ policy: "login", key, cost: 2 });
    const d = await c.getKey("login", key);
    assert.equal(d.key, key);
    assert.equal(d.remaining, 2);
    await admin().resetKey("login", key);
    assert.equal((await c.getKey("login", key)).remaining, 4);
  }
  // Why: the URL parser under fetch normalises a path segment "%2E%2E" away.
  assert.equal(new URL(`${baseUrl}/v1/policies/login/keys/%2E%2E`).pathname, "/v1/policies/login/");
});

test("policies: create, replace, read, delete; config policies are read-only", async () => {
  const a = admin();
  const made = await a.putPolicy("ts-burst", { limit: 3, window: "30s" });
  assert.equal(made.created, true);
  assert.equal(made.policy.source, "api");
  assert.equal(made.policy.window_ms, 30000);
  const replaced = await a.putPolicy("ts-burst", { limit: 4, window: "30s", failure_mode: "allow" });
  assert.equal(replaced.created, false);
  assert.equal((await a.getPolicy("ts-burst")).limit, 4);
  assert.ok((await a.listPolicies()).some((p) => p.name === "login" && p.source === "config"));
  await rejectsWith(() => a.putPolicy("login", { limit: 1, window: "1m" }), 409, "conflict");
  await rejectsWith(() => a.deletePolicy("login"), 409, "conflict");
  await a.deletePolicy("ts-burst");
  await rejectsWith(() => a.getPolicy("ts-burst"), 404, "not-found");
});

test("errors: validation names the field; 401, 403, 404", async () => {
  const c = checker();
  const v = await rejectsWith(() => c.check({ policy: "login", key: "k", cost: 6 }), 400, "validation");
  assert.equal(v.errors[0].field, "cost");
  const many = await rejectsWith(() => c.checks([{ policy: "login", key: "" }, { policy: "Bad!", key: "k" }]), 400, "validation");
  assert.deepEqual(many.errors.map((e) => e.field).sort(), ["checks[0].key", "checks[1].policy"]);
  await rejectsWith(() => c.authorize({ policy: "login", key: "k", cost: -1 }), 400, "validation");
  const unauth = await rejectsWith(() => createSluiceClient({ baseUrl, token: "wrong-token-0123456789" }).check({ policy: "login", key: "k" }), 401, "unauthenticated");
  assert.match(unauth.response.headers.get("WWW-Authenticate"), /^Bearer/);
  await rejectsWith(() => createSluiceClient({ baseUrl }).authorize({ policy: "login", key: "k" }), 401, "unauthenticated");
  await rejectsWith(() => c.putPolicy("x", { limit: 1, window: "1m" }), 403, "forbidden");
  await rejectsWith(() => c.resetKey("login", "k"), 403, "forbidden");
  await rejectsWith(() => c.check({ policy: "nope", key: "k" }), 404, "not-found");
  await rejectsWith(() => c.getKey("nope", "k"), 404, "not-found");
});

/** The units a peek says are free: what a hold (or check) of 1 would see, plus that 1; 0 when it would be denied. */
async function free(c, policy, key) {
  const d = await c.getKey(policy, key);
  return d.allowed ? d.remaining + 1 : 0;
}

test("holds: acquire, settle, renew, release; a denial is a value with Retry-After", async () => {
  const c = checker();
  const a = await c.acquireHold({ policy: "slots", key: "raw", amount: 2, ttl: "30s", id: "job-1" });
  assert.equal(a.allowed, true);
  assert.equal(a.hold.amount, 2);
  assert.match(a.hold.id, /^[A-Za-z0-9_-]+$/);
  assert.equal(a.response.headers.get("RateLimit-Policy"), '"slots";q=3;w=60');
  const again = await c.acquireHold({ policy: "slots", key: "raw", amount: 2, ttl: "30s", id: "job-1" });
  assert.equal(again.hold.replayed, true);
  assert.equal(again.hold.id, a.hold.id);
  const denied = await c.acquireHold({ policy: "slots", key: "raw", amount: 2 });
  assert.equal(denied.allowed, false);
  assert.equal(denied.hold, undefined);
  assert.ok(denied.retryAfter >= 1 && denied.retryAfter <= 30, `retryAfter ${denied.retryAfter}`);
  const renewed = await c.renewHold(a.hold.id, "1m");
  assert.ok(Date.parse(renewed.hold.expires_at) > Date.parse(a.hold.expires_at));
  const settled = await c.settleHold(a.hold.id, 1);
  assert.equal(settled.hold.amount, 1);
  assert.equal(settled.overdraft, 0);
  assert.equal(await free(c, "slots", "raw"), 2);
  assert.equal((await c.releaseHold(a.hold.id)).hold.amount, 0);
  assert.equal(await free(c, "slots", "raw"), 3);
  await rejectsWith(() => c.settleHold(a.hold.id, 2), 409, "hold-conflict");
  await rejectsWith(() => c.releaseHold("AAAA"), 400, "validation");
  await rejectsWith(() => c.check({ policy: "slots", key: "raw" }), 400, "validation");
});

test("withHold settles with fn's amount on success", async () => {
  const c = checker();
  const state = await c.withHold({ policy: "quota", key: "ok", amount: 6 }, async (hold) => {
    assert.equal(hold.amount, 6);
    assert.equal(await free(c, "quota", "ok"), 4);
    return 2;
  });
  assert.equal(state.hold.amount, 2);
  assert.equal(state.hold.settled, true);
  assert.equal(await free(c, "quota", "ok"), 8);
});

test("withHold releases when fn throws", async () => {
  const c = checker();
  await assert.rejects(
    c.withHold({ policy: "slots", key: "throws", amount: 2 }, async () => {
      assert.equal(await free(c, "slots", "throws"), 1);
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(await free(c, "slots", "throws"), 3);
});

test("withHold releases when the signal aborts mid-flight", async () => {
  const c = checker();
  for (const fnHonoursSignal of [true, false]) {
    const ctl = new AbortController();
    const key = `abort-${fnHonoursSignal}`;
    await assert.rejects(
      c.withHold({ policy: "slots", key, amount: 3, signal: ctl.signal }, async (hold, signal) => {
        assert.equal(await free(c, "slots", key), 0);
        ctl.abort(new Error("caller gave up"));
        if (fnHonoursSignal) signal?.throwIfAborted();
        return 3; // fn ignored the abort: still released, the caller gave up
      }),
      /caller gave up/,
    );
    assert.equal(await free(c, "slots", key), 3, `units back (fn honours the signal: ${fnHonoursSignal})`);
  }
});

test("withHold: a denial throws HoldDeniedError and runs nothing", async () => {
  const c = checker();
  await c.acquireHold({ policy: "slots", key: "full", amount: 3 });
  let ran = false;
  const err = await c
    .withHold({ policy: "slots", key: "full", amount: 1 }, () => {
      ran = true;
      return 1;
    })
    .then(() => assert.fail("admitted"), (e) => e);
  assert.ok(err instanceof HoldDeniedError, `not a HoldDeniedError: ${err}`);
  assert.equal(ran, false);
  assert.ok(err.retryAfterMs > 0 && err.retryAfter >= 1, `retry ${err.retryAfterMs} ms, ${err.retryAfter} s`);
  assert.equal(await free(c, "slots", "full"), 0);
});
