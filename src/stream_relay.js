// The client's body for a streamed answer (src/upstream.rs `relay`): a
// pull-based ReadableStream that reads the provider's stream and hands each
// chunk to the wasm StreamTap synchronously, which returns the client's bytes.
// Only plumbing lives here — what a chunk means, when a stream counts as cut,
// what the client is told, is decided in Rust (StreamRelay).
//
// Every way the stream can end goes through `finish`, once: the idle timer is
// cleared and the tap freed (after its last call; its drop reports the end to
// the ledger if nothing else did).
export function relayStream(reader, tap, idleMs) {
  let finished = false;
  let timer = null;
  let controller = null;
  // When the pending read of the provider's stream was asked for (null: none
  // pending — the client has not asked for more, and its pace is not the
  // provider's silence).
  let waitingSince = null;
  const finish = () => {
    finished = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    tap.free();
  };
  // Sends what is left, then closes; the provider's stream is let go of.
  const close = (bytes) => {
    finish();
    if (bytes.length) controller.enqueue(bytes);
    controller.close();
    reader.cancel().catch(() => {});
  };
  // One timer for the idle limit, re-armed for what is left of it when it
  // fires early (chunks came meanwhile, or no read was pending), not set per
  // chunk.
  const onIdle = () => {
    timer = null;
    if (finished) return;
    if (waitingSince === null) {
      timer = setTimeout(onIdle, idleMs);
      return;
    }
    const left = tap.idle_left(waitingSince);
    if (left > 0) timer = setTimeout(onIdle, left);
    else close(tap.idle_expired());
  };
  return new ReadableStream({
    start(c) {
      controller = c;
      const first = tap.prefix();
      if (first.length) c.enqueue(first);
      timer = setTimeout(onIdle, idleMs);
    },
    async pull(c) {
      while (!finished) {
        let read;
        waitingSince = Date.now();
        try {
          read = await reader.read();
        } catch (e) {
          waitingSince = null;
          if (!finished) close(tap.broke(String(e?.message ?? e)));
          return;
        }
        waitingSince = null;
        if (finished) return;
        if (read.done) return close(tap.end());
        const out = tap.push(read.value);
        if (tap.done()) return close(out);
        if (out.length) return c.enqueue(out);
      }
    },
    cancel() {
      if (finished) return;
      tap.cancel();
      finish();
      reader.cancel().catch(() => {});
    },
  });
}
