export { ContainerdClient, type ImageRecord, type ContentInfo } from './client.js'
export { ContainerdSupervisor, type ContainerdState, type ContainerdStateName } from './supervisor.js'
export { ContainerdStore } from './content-store.js'
export * from './diagnose.js'
