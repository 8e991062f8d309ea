// Original file: proto/content.proto

import type { Long } from '@grpc/proto-loader';

export interface ContentCreate {
  'digest'?: (string);
  'size'?: (number | string | Long);
}

export interface ContentCreate__Output {
  'digest': (string);
  'size': (string);
}
