-- stub: filled by the shared-memory/synchronisation work
return { exports = {} }
