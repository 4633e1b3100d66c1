/**
 * Test helper for adversary settings (shared/method/adversary_config.ts): the
 * clean configuration, for gradients compared without an adversary.
 *
 * @module
 */
import { type AdversaryConfig, DEFAULT_ADVERSARY } from "../../shared/method/adversary_config.ts";

/** The clean configuration (no adversary). */
export const NO_ADVERSARY: AdversaryConfig = { ...DEFAULT_ADVERSARY, mode: "off" };
