export { ContainerdClient, type ImageRecord, type ContentInfo } from './client.js'
export { ContainerdSupervisor, type ContainerdState, type ContainerdStateName, type SessionHandler, type SessionRunner } from './supervisor.js'
export { ContainerdStore, type ContainerdStoreInit } from './content-store.js'
export * from './diagnose.js'
