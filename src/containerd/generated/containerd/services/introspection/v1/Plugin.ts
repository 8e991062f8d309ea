// Original file: proto/introspection.proto


export interface Plugin {
  'type'?: (string);
  'id'?: (string);
  'requires'?: (string)[];
  'exports'?: ({[key: string]: string});
  'capabilities'?: (string)[];
}

export interface Plugin__Output {
  'type': (string);
  'id': (string);
  'requires': (string)[];
  'exports': ({[key: string]: string});
  'capabilities': (string)[];
}
