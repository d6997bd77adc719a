-- stub: filled by the process work
return { exports = {} }
