// The package as a user gets it: `npm pack` this directory, install the tarball into a fresh project (as the
// README says), import "@sluice-dev/sluice-client" from there, type-check a TypeScript file against the installed
// types, and run a check against a real sluice (built from this repository, or SLUICE_BIN).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const sdk = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
const repo = resolve(sdk, "../..");
const TOKEN = "ts-install-check-token-0123456789";
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

let dir, proc, baseUrl, tarball, project, logs = "";

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

async function waitReady(url, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null) throw new Error(`sluice exited (${proc.exitCode}):\n${logs}`);
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${ms} ms:\n${logs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "sluice-ts-install-"));
  let bin = process.env.SLUICE_BIN;
  if (!bin) {
    bin = join(dir, "sluice");
    execFileSync("go", ["build", "-o", bin, "."], { cwd: repo, stdio: "inherit" });
  }
  writeFileSync(join(dir, "sluice.yaml"), "log:\n  level: warn\npolicies:\n  - {name: login, limit: 2, window: 1h}\n");
  writeFileSync(join(dir, "tokens.yaml"), `- {name: app, token: ${TOKEN}, role: check}\n`);
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  proc = spawn(bin, ["serve", "-config", join(dir, "sluice.yaml")], {
    env: { ...process.env, SLUICE_LISTEN: `127.0.0.1:${port}`, SLUICE_TOKENS_FILE: join(dir, "tokens.yaml") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (b) => (logs += b));
  proc.stderr.on("data", (b) => (logs += b));
  await waitReady(`${baseUrl}/readyz`, 30000);

  // npm pack, exactly as a user would; the tarball lands in dir.
  const packed = JSON.parse(
    execFileSync(npm, ["pack", "--json", "--pack-destination", dir], { cwd: sdk, encoding: "utf8" }),
  );
  tarball = join(dir, packed[0].filename);
  project = join(dir, "app");
  execFileSync("mkdir", ["-p", project]);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "app", version: "0.0.0", type: "module", private: true }));
  execFileSync(npm, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], {
    cwd: project,
    stdio: "inherit",
  });
});

after(() => {
  if (proc && proc.exitCode === null) proc.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the tarball holds the client, its types and the generated schema, and is installable (not private)", () => {
  const packed = JSON.parse(execFileSync(npm, ["pack", "--dry-run", "--json"], { cwd: sdk, encoding: "utf8" }));
  const files = packed[0].files.map((f) => f.path).sort();
  for (const f of ["package.json", "src/index.js", "src/index.d.ts", "src/schema.d.ts"]) {
    assert.ok(files.includes(f), `${f} missing from the tarball: ${files.join(", ")}`);
  }
  assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("node_modules/")), `tests or node_modules packed: ${files}`);
  const manifest = JSON.parse(readFileSync(join(project, "node_modules", "@sluice-dev", "sluice-client", "package.json"), "utf8"));
  assert.equal(manifest.private, undefined, "a private package cannot be published");
  assert.equal(manifest.dependencies["openapi-fetch"], "0.17.0");
  const installed = readdirSync(join(project, "node_modules", "@sluice-dev", "sluice-client", "src")).sort();
  assert.ok(installed.includes("index.js") && installed.includes("index.d.ts"), `installed src: ${installed}`);
});

test("a project that installed the tarball imports the client and decides against a real sluice", () => {
  writeFileSync(
    join(project, "check.mjs"),
    `import { createSluiceClient, SluiceProblemError } from "@sluice-dev/sluice-client";
const sluice = createSluiceClient({ baseUrl: process.env.SLUICE_URL, token: process.env.SLUICE_TOKEN });
const out = [];
for (let i = 0; i < 3; i++) out.push((await sluice.check({ policy: "login", key: "user:42" })).allowed);
let problem = null;
try { await sluice.check({ policy: "login", key: "user:42", cost: 99 }); }
catch (e) { if (e instanceof SluiceProblemError) problem = { status: e.status, kind: e.kind }; }
console.log(JSON.stringify({ out, problem }));
`,
  );
  const got = JSON.parse(
    execFileSync(process.execPath, ["check.mjs"], {
      cwd: project,
      encoding: "utf8",
      env: { ...process.env, SLUICE_URL: baseUrl, SLUICE_TOKEN: TOKEN },
    }),
  );
  assert.deepEqual(got.out, [true, true, false], "limit 2: two admitted, the third denied (a decision, not an error)");
  assert.deepEqual(got.problem, { status: 400, kind: "validation" });
});

test("the installed types type-check a TypeScript consumer", () => {
  writeFileSync(
    join(project, "use.ts"),
    `import { createSluiceClient } from "@sluice-dev/sluice-client";
const sluice = createSluiceClient({ baseUrl: "http://127.0.0.1:8080" });
export async function remaining(key: string): Promise<number> {
  const d = await sluice.check({ policy: "login", key });
  return d.remaining;
}
`,
  );
  writeFileSync(
    join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, lib: ["ES2022", "DOM"], types: [] },
      files: ["use.ts"],
    }),
  );
  // typescript comes from the SDK's own pinned devDependencies; the consumer project has only the tarball.
  execFileSync(process.execPath, [join(sdk, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], {
    cwd: project,
    stdio: "inherit",
  });
});
