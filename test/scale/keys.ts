import { createHash } from 'node:crypto'

/** The keys scale node `index` advertises; the orchestrator computes the same ones to check lookups. */
export function nodeKeys (index: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `sha256:${createHash('sha256').update(`node-${index}-key-${i}`).digest('hex')}`)
}
