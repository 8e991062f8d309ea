import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { IntrospectionClient as _containerd_services_introspection_v1_IntrospectionClient, IntrospectionDefinition as _containerd_services_introspection_v1_IntrospectionDefinition } from './containerd/services/introspection/v1/Introspection';
import type { Plugin as _containerd_services_introspection_v1_Plugin, Plugin__Output as _containerd_services_introspection_v1_Plugin__Output } from './containerd/services/introspection/v1/Plugin';
import type { PluginsRequest as _containerd_services_introspection_v1_PluginsRequest, PluginsRequest__Output as _containerd_services_introspection_v1_PluginsRequest__Output } from './containerd/services/introspection/v1/PluginsRequest';
import type { PluginsResponse as _containerd_services_introspection_v1_PluginsResponse, PluginsResponse__Output as _containerd_services_introspection_v1_PluginsResponse__Output } from './containerd/services/introspection/v1/PluginsResponse';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  containerd: {
    services: {
      introspection: {
        v1: {
          Introspection: SubtypeConstructor<typeof grpc.Client, _containerd_services_introspection_v1_IntrospectionClient> & { service: _containerd_services_introspection_v1_IntrospectionDefinition }
          Plugin: MessageTypeDefinition<_containerd_services_introspection_v1_Plugin, _containerd_services_introspection_v1_Plugin__Output>
          PluginsRequest: MessageTypeDefinition<_containerd_services_introspection_v1_PluginsRequest, _containerd_services_introspection_v1_PluginsRequest__Output>
          PluginsResponse: MessageTypeDefinition<_containerd_services_introspection_v1_PluginsResponse, _containerd_services_introspection_v1_PluginsResponse__Output>
        }
      }
    }
  }
}

