/**
 * Named points where the fault tests (test/faults.test.ts) hold a process to inject a signal, a
 * kill or a full disk at a known moment. With OCTO_NATIVE_PAUSE_AT=point[,point…] set, reaching a
 * listed point prints `octo-native: paused at POINT (pid N)` on stderr and waits
 * OCTO_NATIVE_PAUSE_MS (default 3000) before going on; signal handlers run meanwhile. Unset, a
 * point costs nothing.
 */
export async function pausePoint(name: string): Promise<void> {
  const points = process.env.OCTO_NATIVE_PAUSE_AT;
  if (!points || !points.split(",").includes(name)) return;
  process.stderr.write(`octo-native: paused at ${name} (pid ${process.pid})\n`);
  await new Promise((resolve) => setTimeout(resolve, Number(process.env.OCTO_NATIVE_PAUSE_MS ?? 3000)));
}
