// Original file: proto/content.proto


export interface ContentDelete {
  'digest'?: (string);
}

export interface ContentDelete__Output {
  'digest': (string);
}
