// Original file: proto/images.proto


export interface ImageDelete {
  'name'?: (string);
}

export interface ImageDelete__Output {
  'name': (string);
}
