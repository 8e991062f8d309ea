// Original file: proto/introspection.proto


export interface PluginsRequest {
  'filters'?: (string)[];
}

export interface PluginsRequest__Output {
  'filters': (string)[];
}
