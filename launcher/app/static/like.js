element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-act="like"], [data-act="unlike"], [data-act="undate"]');
  if (!b) return;
  e.preventDefault(); e.stopPropagation();
  const hit = b.closest('.hit');
  if (b.dataset.act === 'like' && hit) trigger('click', {like: hit.dataset.piece, name: hit.dataset.name});
  else if (b.dataset.act === 'undate') trigger('click', {undate: b.dataset.expr});
  else trigger('click', {unlike: true});
});
