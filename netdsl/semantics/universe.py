"""The class topology: a finite set of endpoints that stands for every cluster a program may be applied to.

Rule: every predicate any evaluator applies to an endpoint - a label selector over a pod's or its
namespace's labels, a namespace name, a named port's number, a CIDR, a DNS name, a target's own
non-pod identity - is a finite combination of the atoms the program and the emitted objects mention.
Endpoints alike in every atom get the same verdict from every evaluator, so one representative per
non-empty class (cell) decides for all of its members, in every cluster:

* namespaces: the cells of every namespace selector (by name or labels), each with labels that satisfy
  exactly that cell; one name with several label sets becomes several variants of that namespace;
* pods: per namespace cell, the cells of the pod selectors that can apply in that namespace, each pod
  standing for any number of replicas (a pod's connection to itself is replica-to-replica traffic);
  destination variants with each named port bound to each port class;
* externals: one address per interval between CIDR boundaries, DNS names inside and outside each FQDN
  pattern, and the target's own identities (netdsl.semantics.targets.NON_POD_BY_TARGET);
* ports: one probe per protocol and interval between port boundaries.

A difference found over the class topology is a real counterexample (each representative is a
concrete, possible pod); no difference means none in any cluster.
"""
