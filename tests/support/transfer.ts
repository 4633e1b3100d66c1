/**
 * Test helper for chunked transfers (shared/wire/transfer.ts): a prepared
 * message carried through a reassembler in memory, as over a socket.
 *
 * @module
 */
import type { Message } from "../../shared/wire/protocol.ts";
import { framesOf, type Outgoing, Reassembler } from "../../shared/wire/transfer.ts";

/**
 * Sends `out` through a fresh reassembler in memory, exactly as over a
 * socket (declarations, chunks, message), and returns the message received.
 * For in-process workers (tests/support/in_process.ts) and transfer tests.
 */
export function deliver(
  out: Outgoing,
  opts: { chunkBytes?: number; maxTransferBytes?: number } = {},
): Message {
  const r = new Reassembler({ maxTransferBytes: opts.maxTransferBytes ?? Number.MAX_SAFE_INTEGER });
  const ids = out instanceof Uint8Array ? [] : out.tensors.map((_, i) => i + 1);
  let got: Message | null = null;
  for (const f of framesOf(out, ids, opts.chunkBytes)) got = r.receive(f.build());
  if (!got) throw new Error("unreachable: the last frame completes the message");
  return got;
}
