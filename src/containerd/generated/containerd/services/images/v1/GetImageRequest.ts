// Original file: proto/images.proto


export interface GetImageRequest {
  'name'?: (string);
}

export interface GetImageRequest__Output {
  'name': (string);
}
