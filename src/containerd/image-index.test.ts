import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ImageIndex, type IndexedImage, type KeyDelta } from './image-index.js'

const d = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`
const TYPE = 'application/vnd.oci.image.layer.v1.tar'

function image (tag: string | undefined, digests: number[], registry = 'docker.io'): IndexedImage {
  const base = { registry, repository: 'library/app', sizeBytes: digests.length * 10, targetDigest: d(digests[0] ?? 0), digests: digests.map(d) }
  return tag === undefined ? base : { ...base, tag: `${registry}/library/app:${tag}` }
}

function types (...digests: number[]): Map<string, string> {
  return new Map(digests.map((n) => [d(n), TYPE]))
}

function sorted (delta: KeyDelta): { added: string[], removed: string[] } {
  return { added: [...delta.added].sort(), removed: [...delta.removed].sort() }
}

describe('ImageIndex', () => {
  it('advertises a key while any image holds it, and only the keys whose presence changed', () => {
    const index = new ImageIndex()
    assert.deepEqual(sorted(index.upsert('a', image('1', [1, 2, 3]), types(1, 2, 3))), {
      added: ['docker.io/library/app:1', d(1), d(2), d(3)].sort(), removed: []
    })
    // A second image sharing two digests adds only what is new.
    assert.deepEqual(sorted(index.upsert('b', image('2', [1, 2, 4]), types(1, 2, 4))), {
      added: ['docker.io/library/app:2', d(4)].sort(), removed: []
    })
    // Removing the first withdraws only what nobody else holds.
    assert.deepEqual(sorted(index.remove('a')), { added: [], removed: ['docker.io/library/app:1', d(3)].sort() })
    assert.ok(index.has(d(1)) && index.has(d(2)))
    assert.equal(index.mediaType(d(3)), undefined, 'media types leave with their key')
    assert.equal(index.mediaType(d(1)), TYPE)
    assert.deepEqual(sorted(index.remove('b')), { added: [], removed: ['docker.io/library/app:2', d(1), d(2), d(4)].sort() })
    assert.equal(index.size, 0)
    assert.deepEqual(index.remove('b'), { added: [], removed: [] }, 'removing twice is no change')
  })

  it('turns an update of one image into the exact difference', () => {
    const index = new ImageIndex()
    index.upsert('a', image('1', [1, 2, 3]), types(1, 2, 3))
    // Re-tagged content: 1 and 2 stay, 3 goes, 5 comes; the tag key is unchanged.
    assert.deepEqual(sorted(index.upsert('a', image('1', [1, 2, 5]), types(1, 2, 5))), { added: [d(5)], removed: [d(3)] })
    assert.deepEqual(index.upsert('a', image('1', [1, 2, 5]), types(1, 2, 5)), { added: [], removed: [] }, 'the same image again is no change')
    // A filtered or unparsable image after an update: everything it held leaves.
    assert.deepEqual(sorted(index.upsert('a', undefined)), { added: [], removed: ['docker.io/library/app:1', d(1), d(2), d(5)].sort() })
  })

  it('reports a tag moved to another digest as removed and added, even when no digest changes presence', () => {
    const index = new ImageIndex()
    index.upsert('app:1', image('1', [1, 2]), types(1, 2))
    index.upsert('app:2', image('2', [3, 4]), types(3, 4))
    // app:1 now names the content of app:2: its old digests leave, its new ones were held already.
    assert.deepEqual(sorted(index.upsert('app:1', image('1', [3, 4]), types(3, 4))), {
      added: ['docker.io/library/app:1'], removed: ['docker.io/library/app:1', d(1), d(2)].sort()
    })
    assert.equal(index.target('app:1'), d(3))
    index.upsert('app:3', image('3', [1, 2]), types(1, 2))
    assert.deepEqual(sorted(index.upsert('app:1', image('1', [1, 2]), types(1, 2))), {
      added: ['docker.io/library/app:1'], removed: ['docker.io/library/app:1']
    }, 'a move between digests other images hold is still a change')
    assert.deepEqual(index.upsert('app:1', image('1', [1, 2]), types(1, 2)), { added: [], removed: [] }, 'the same target again is no change')
    assert.ok(index.has('docker.io/library/app:1'))
  })

  it('replace rebuilds everything, drops loose digests and keeps media types only for held digests', () => {
    const index = new ImageIndex()
    index.addLoose(d(9), 0)
    index.replace(new Map([['a', image('1', [1, 2])], ['b', image(undefined, [2, 3])]]), types(1, 2, 3, 7))
    assert.deepEqual(index.keys().sort(), ['docker.io/library/app:1', d(1), d(2), d(3)].sort())
    assert.equal(index.mediaType(d(7)), undefined)
    assert.equal(index.mediaType(d(3)), TYPE)
    assert.equal(index.target('a'), d(1))
    // Refcounts survive a replace: removing one holder of d(2) keeps it.
    assert.deepEqual(sorted(index.remove('a')), { added: [], removed: ['docker.io/library/app:1', d(1)].sort() })
    assert.ok(index.has(d(2)))
  })

  it('loose digests expire unless an image claims them, and then leave with that image', () => {
    const index = new ImageIndex()
    assert.deepEqual(index.addLoose(d(1), 1000), { added: [d(1)], removed: [] })
    assert.deepEqual(index.addLoose(d(1), 2000), { added: [], removed: [] }, 'already advertised')
    assert.deepEqual(index.addLoose(d(2), 5000), { added: [d(2)], removed: [] })
    assert.deepEqual(index.expireLoose(3000), { added: [], removed: [d(1)] })
    assert.ok(index.has(d(2)))

    // The pull finishes: its image claims d(2); expiry no longer touches it.
    assert.deepEqual(sorted(index.upsert('a', image('1', [2, 3]), types(2, 3))), { added: ['docker.io/library/app:1', d(3)].sort(), removed: [] })
    assert.deepEqual(index.expireLoose(Number.MAX_SAFE_INTEGER), { added: [], removed: [] })
    // ...and it goes when the image goes (a content event alone used to keep it forever).
    assert.ok(index.remove('a').removed.includes(d(2)))
    assert.equal(index.size, 0)

    // Content held by an image is never loose.
    index.upsert('a', image('1', [4]), types(4))
    assert.deepEqual(index.addLoose(d(4), 0), { added: [], removed: [] })
    assert.deepEqual(index.expireLoose(Number.MAX_SAFE_INTEGER), { added: [], removed: [] })
    assert.ok(index.has(d(4)))
  })

  it('removeContent withdraws a digest from every image that listed it', () => {
    const index = new ImageIndex()
    index.upsert('a', image('1', [1, 2]), types(1, 2))
    index.upsert('b', image('2', [2, 3]), types(2, 3))
    index.addLoose(d(8), 0)
    assert.deepEqual(index.removeContent(d(2)), { added: [], removed: [d(2)] })
    assert.deepEqual(index.removeContent(d(2)), { added: [], removed: [] })
    assert.deepEqual(index.removeContent(d(8)), { added: [], removed: [d(8)] })
    assert.deepEqual([...index.images().get('a')?.digests ?? []], [d(1)])
    // The images leave cleanly afterwards: no count goes negative, nothing reappears.
    assert.deepEqual(sorted(index.remove('a')), { added: [], removed: ['docker.io/library/app:1', d(1)].sort() })
    assert.deepEqual(sorted(index.remove('b')), { added: [], removed: ['docker.io/library/app:2', d(3)].sort() })
    assert.equal(index.size, 0)
  })

  it('counts tags, images and contents per registry, and lists registries', () => {
    const index = new ImageIndex()
    index.upsert('a', image('1', [1, 2]), types())
    index.upsert('b', image('2', [1, 3]), types())
    index.upsert('c', image(undefined, [4], 'ghcr.io'), types())
    index.addLoose(d(9), 0)
    assert.deepEqual(index.advertisedCounts(), new Map([
      ['docker.io', { tags: 2, images: 1, contents: 3 }],
      ['ghcr.io', { tags: 0, images: 1, contents: 1 }]
    ]))
    assert.deepEqual([...index.registries()].sort(), ['docker.io', 'ghcr.io'])
  })

  it('clear says whether anything was advertised', () => {
    const index = new ImageIndex()
    assert.equal(index.clear(), false)
    index.addLoose(d(1), 0)
    assert.equal(index.clear(), true)
    assert.deepEqual(index.keys(), [])
  })
})
