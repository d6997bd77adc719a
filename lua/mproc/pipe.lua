-- stub: filled by the pipe work
return { exports = {} }
