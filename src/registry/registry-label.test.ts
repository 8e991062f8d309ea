import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createRegistryLabeler, MAX_LEARNED_REGISTRIES } from './registry-label.js'

describe('registry labels for metrics', () => {
  it('with an explicit --mirrored-registries, keeps those and folds everything else into `other`', () => {
    const label = createRegistryLabeler({ mirroredRegistries: ['https://docker.io', 'http://Registry.Local:5000'], localRegistries: () => ['ghcr.io'] })
    assert.equal(label.label('docker.io'), 'docker.io')
    assert.equal(label.label('registry.local:5000'), 'registry.local:5000')
    assert.equal(label.label('ghcr.io'), 'other', 'not mirrored, even if held locally')
    label.learn('quay.io')
    assert.equal(label.label('quay.io'), 'other', 'learning never widens an explicit list')
    assert.equal(label.label(''), '', 'a digest request without ns keeps Spegel\'s empty label')
  })

  it('when mirroring everything, takes the registries of local images and of successful mirrors', () => {
    const local = new Set(['ghcr.io'])
    const label = createRegistryLabeler({ mirroredRegistries: ['_default'], localRegistries: () => local })
    assert.equal(label.label('ghcr.io'), 'ghcr.io')
    assert.equal(label.label('docker.io'), 'other')
    label.learn('docker.io')
    assert.equal(label.label('docker.io'), 'docker.io')
    local.delete('ghcr.io')
    assert.equal(label.label('ghcr.io'), 'other', 'follows the store')
  })

  it('caps what it learns, so a flood of fake registries cannot grow the series', () => {
    const label = createRegistryLabeler({ mirroredRegistries: [], localRegistries: () => [] })
    for (let i = 0; i < MAX_LEARNED_REGISTRIES + 50; i++) label.learn(`r${i}.example`)
    const labels = new Set<string>()
    for (let i = 0; i < MAX_LEARNED_REGISTRIES + 50; i++) labels.add(label.label(`r${i}.example`))
    assert.equal(labels.size, MAX_LEARNED_REGISTRIES + 1)
    assert.ok(labels.has('other'))
  })
})
