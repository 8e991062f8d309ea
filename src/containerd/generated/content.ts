import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { ContentClient as _containerd_services_content_v1_ContentClient, ContentDefinition as _containerd_services_content_v1_ContentDefinition } from './containerd/services/content/v1/Content';
import type { ContentCreate as _containerd_services_content_v1_ContentCreate, ContentCreate__Output as _containerd_services_content_v1_ContentCreate__Output } from './containerd/services/content/v1/ContentCreate';
import type { ContentDelete as _containerd_services_content_v1_ContentDelete, ContentDelete__Output as _containerd_services_content_v1_ContentDelete__Output } from './containerd/services/content/v1/ContentDelete';
import type { Info as _containerd_services_content_v1_Info, Info__Output as _containerd_services_content_v1_Info__Output } from './containerd/services/content/v1/Info';
import type { InfoRequest as _containerd_services_content_v1_InfoRequest, InfoRequest__Output as _containerd_services_content_v1_InfoRequest__Output } from './containerd/services/content/v1/InfoRequest';
import type { InfoResponse as _containerd_services_content_v1_InfoResponse, InfoResponse__Output as _containerd_services_content_v1_InfoResponse__Output } from './containerd/services/content/v1/InfoResponse';
import type { ListContentRequest as _containerd_services_content_v1_ListContentRequest, ListContentRequest__Output as _containerd_services_content_v1_ListContentRequest__Output } from './containerd/services/content/v1/ListContentRequest';
import type { ListContentResponse as _containerd_services_content_v1_ListContentResponse, ListContentResponse__Output as _containerd_services_content_v1_ListContentResponse__Output } from './containerd/services/content/v1/ListContentResponse';
import type { ReadContentRequest as _containerd_services_content_v1_ReadContentRequest, ReadContentRequest__Output as _containerd_services_content_v1_ReadContentRequest__Output } from './containerd/services/content/v1/ReadContentRequest';
import type { ReadContentResponse as _containerd_services_content_v1_ReadContentResponse, ReadContentResponse__Output as _containerd_services_content_v1_ReadContentResponse__Output } from './containerd/services/content/v1/ReadContentResponse';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from './google/protobuf/Timestamp';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  containerd: {
    services: {
      content: {
        v1: {
          Content: SubtypeConstructor<typeof grpc.Client, _containerd_services_content_v1_ContentClient> & { service: _containerd_services_content_v1_ContentDefinition }
          ContentCreate: MessageTypeDefinition<_containerd_services_content_v1_ContentCreate, _containerd_services_content_v1_ContentCreate__Output>
          ContentDelete: MessageTypeDefinition<_containerd_services_content_v1_ContentDelete, _containerd_services_content_v1_ContentDelete__Output>
          Info: MessageTypeDefinition<_containerd_services_content_v1_Info, _containerd_services_content_v1_Info__Output>
          InfoRequest: MessageTypeDefinition<_containerd_services_content_v1_InfoRequest, _containerd_services_content_v1_InfoRequest__Output>
          InfoResponse: MessageTypeDefinition<_containerd_services_content_v1_InfoResponse, _containerd_services_content_v1_InfoResponse__Output>
          ListContentRequest: MessageTypeDefinition<_containerd_services_content_v1_ListContentRequest, _containerd_services_content_v1_ListContentRequest__Output>
          ListContentResponse: MessageTypeDefinition<_containerd_services_content_v1_ListContentResponse, _containerd_services_content_v1_ListContentResponse__Output>
          ReadContentRequest: MessageTypeDefinition<_containerd_services_content_v1_ReadContentRequest, _containerd_services_content_v1_ReadContentRequest__Output>
          ReadContentResponse: MessageTypeDefinition<_containerd_services_content_v1_ReadContentResponse, _containerd_services_content_v1_ReadContentResponse__Output>
        }
      }
    }
  }
  google: {
    protobuf: {
      Timestamp: MessageTypeDefinition<_google_protobuf_Timestamp, _google_protobuf_Timestamp__Output>
    }
  }
}

