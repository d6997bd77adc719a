-- stub: filled by the codec work
return { exports = {} }
