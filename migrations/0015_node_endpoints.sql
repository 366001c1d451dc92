-- What the router reads of the node list: each node's id, name and DSN without its credentials (the
-- user and password of the URL, and the passfile, passwordenv, password and user parameters). The
-- application role reads this view, never shardcast.nodes, whose DSNs may hold an administrator's
-- password; the router connects to the nodes with its own (application) user and password.
create view shardcast.node_endpoints as
select id, name,
       regexp_replace(
         regexp_replace(
           regexp_replace(dsn, '^(postgres(?:ql)?://)[^/?#]*@', '\1'),
           '(?<=[?&])(password|passfile|passwordenv|user)=[^&#]*(&|$)', '', 'g'),
         '[?&]$', '') as dsn
  from shardcast.nodes;
