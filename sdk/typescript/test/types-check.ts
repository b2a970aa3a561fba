// Compile-only: the README's TypeScript usage type-checks against index.d.ts and the generated schema.
import { createSluiceClient, SluiceProblemError, HoldDeniedError, type Decision, type HoldState } from "../src/index.js";

export async function example(): Promise<void> {
  const sluice = createSluiceClient({ baseUrl: "http://127.0.0.1:8080", token: "a-token-of-16-chars-or-more" });
  const d: Decision = await sluice.check({ policy: "login", key: "user:42" });
  if (!d.allowed) console.log(`retry in ${d.retry_after_ms} ms`);
  const a = await sluice.authorize({ policy: "login", key: "10.0.0.1" });
  if (!a.allowed) console.log(`429, Retry-After ${a.retryAfter}`);
  try {
    await sluice.check({ policy: "login", key: "user:42", cost: 99 });
  } catch (e) {
    if (e instanceof SluiceProblemError && e.kind === "validation") console.log(e.errors[0]?.field);
  }
  try {
    const s: HoldState | undefined = await sluice.withHold({ policy: "streams", key: "tenant:7", amount: 1 }, async (hold, signal) => {
      signal?.throwIfAborted();
      console.log(hold.id);
      return 1;
    });
    console.log(s?.remaining);
  } catch (e) {
    if (e instanceof HoldDeniedError) console.log(`retry in ${e.retryAfterMs} ms`);
  }
  // @ts-expect-error: cost is a number
  await sluice.check({ policy: "login", key: "k", cost: "1" });
}
