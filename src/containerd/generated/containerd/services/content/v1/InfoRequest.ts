// Original file: proto/content.proto


export interface InfoRequest {
  'digest'?: (string);
}

export interface InfoRequest__Output {
  'digest': (string);
}
